import VKFCore

/// A model's weights as adapters see them: its projections by module name, which short names
/// LoRA may target, and how fused projections split. `DecoderWeights` (decoders) and
/// `BertWeights` (encoders) conform, so one `LoRAModel` serves both.
public protocol AdaptableWeights: AnyObject {
  /// The backend that owns every tensor.
  var backend: Backend { get }
  /// The short module names LoRA may target, in PEFT's (and the model's) order:
  /// q_proj … down_proj for decoders, query / key / value / dense for BERT.
  var loraModules: [String] { get }
  /// True when q/k/v and gate/up are stored fused (Phi-3).
  var fusedProjections: Bool { get }
  /// The fused projections and their parts (empty without `fusedProjections`).
  var fusedModules: [(module: String, parts: [(module: String, rowOffset: Int, rows: Int)])] { get }
  /// Hidden width (a sequence-classification head's input).
  var hiddenSize: Int { get }
  /// Calls `body` with every projection's full module name and the projection, in order.
  func updateProjections(_ body: (String, inout Linear) throws -> Void) rethrows
}

extension DecoderWeights: AdaptableWeights {
  /// The seven Llama projections, in PEFT's (and the model's) order.
  public static let projectionModules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
  /// A mixture-of-experts model offers its attention projections only (PEFT would apply the
  /// MLP names to every expert).
  public var loraModules: [String] { shape.moe == nil ? Self.projectionModules : Array(Self.projectionModules.prefix(4)) }
  public var fusedProjections: Bool { shape.fusedProjections }
  public var fusedModules: [(module: String, parts: [(module: String, rowOffset: Int, rows: Int)])] { shape.fusedModules }
  public var hiddenSize: Int { shape.hidden }
}

extension BertWeights: AdaptableWeights {
  /// BERT's projection names as PEFT matches them (`dense` is the attention output, both MLP
  /// projections and the pooler's).
  public static let projectionModules = ["query", "key", "value", "dense"]
  public var loraModules: [String] { Self.projectionModules }
  public var fusedProjections: Bool { false }
  public var fusedModules: [(module: String, parts: [(module: String, rowOffset: Int, rows: Int)])] { [] }
  public var hiddenSize: Int { config.hiddenSize }

  public func updateProjections(_ body: (String, inout Linear) throws -> Void) rethrows {
    let p = Self.encoderPrefix + "encoder.layer."
    for i in layers.indices {
      try body(p + "\(i).attention.self.query", &layers[i].query)
      try body(p + "\(i).attention.self.key", &layers[i].key)
      try body(p + "\(i).attention.self.value", &layers[i].value)
      try body(p + "\(i).attention.output.dense", &layers[i].attentionOutput)
      try body(p + "\(i).intermediate.dense", &layers[i].intermediate)
      try body(p + "\(i).output.dense", &layers[i].output)
    }
    if var pooler {
      try body(Self.encoderPrefix + "pooler.dense", &pooler)
      self.pooler = pooler
    }
  }
}
