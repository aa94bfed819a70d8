import VKFCore

/// A LayerNorm's weight and bias, with their gradients when trained.
public struct LayerNormParameters {
  public var weight: Tensor
  public var bias: Tensor
  public var weightGrad: Tensor?
  public var biasGrad: Tensor?
}

/// One post-LN BERT layer's parameters (transformers' `BertLayer`).
public struct BertLayerWeights {
  public var query: Linear, key: Linear, value: Linear
  /// attention.output.dense
  public var attentionOutput: Linear
  /// attention.output.LayerNorm
  public var attentionNorm: LayerNormParameters
  /// intermediate.dense (C → F)
  public var intermediate: Linear
  /// output.dense (F → C)
  public var output: Linear
  /// output.LayerNorm
  public var outputNorm: LayerNormParameters
}

/// Which head sits on the encoder.
public enum BertHead: Equatable, Sendable {
  /// `BertForSequenceClassification`: pooler tanh(dense([CLS])) → classifier (labels).
  case classifier(labels: Int)
  /// `BertForMaskedLM`: transform dense → act → LayerNorm → the word embeddings (tied) + bias.
  case maskedLM
}

/// The parameters of `BertForSequenceClassification` (embeddings, layers, pooler and a
/// classifier of `numLabels` outputs) or of `BertForMaskedLM` (embeddings, layers, the MLM
/// head), each with a gradient when trained.
///
/// Names are transformers' ("bert.encoder.layer.0.attention.self.query.weight",
/// "classifier.weight"); a checkpoint of the bare `BertModel` (no "bert." prefix, no
/// classifier — sentence-transformers' MiniLM) loads too. A missing classifier, or pooler, is
/// initialised as transformers does: weight normal(0, initializer_range) from the seed, bias 0.
public final class BertWeights {
  public let config: BertConfig
  public let backend: Backend
  public let head: BertHead
  /// The classifier's outputs; 0 for the masked-LM head.
  public var numLabels: Int { if case .classifier(let n) = head { return n } else { return 0 } }
  public var wordEmbeddings: Tensor, positionEmbeddings: Tensor, typeEmbeddings: Tensor
  public var wordEmbeddingsGrad: Tensor?, positionEmbeddingsGrad: Tensor?, typeEmbeddingsGrad: Tensor?
  public var embeddingNorm: LayerNormParameters
  public var layers: [BertLayerWeights]
  /// Classification head: the pooler and the classifier (nil for the masked-LM head).
  public var pooler: Linear?
  public var classifier: Linear?
  /// Masked-LM head: `cls.predictions.transform.dense`, its LayerNorm, and the decoder's bias
  /// `cls.predictions.bias` (V); the decoder's weight is the word embeddings.
  public var mlmTransform: Linear?
  public var mlmNorm: LayerNormParameters?
  public var mlmBias: Tensor?, mlmBiasGrad: Tensor?
  /// Every parameter under its `BertForSequenceClassification` name, in a fixed order, with
  /// its gradient (nil when frozen).
  public private(set) var named: [(name: String, value: Tensor, gradient: Tensor?)] = []
  /// Parameters that were not in the checkpoint and were initialised (reported to the user).
  public private(set) var initialised: [String] = []

  /// The prefix of the encoder's names in a classification model.
  public static let encoderPrefix = "bert."

  /// Loads from `source` for `numLabels` classes; `trainable`: every parameter gets a
  /// gradient (full fine-tuning), else all are frozen but the classifier.
  public convenience init(source: WeightSource, config: BertConfig, numLabels: Int, backend: Backend,
                          trainable: Bool, seed: UInt64) throws {
    try self.init(source: source, config: config, head: .classifier(labels: numLabels), backend: backend,
                  trainable: trainable, seed: seed)
  }

  /// Loads from `source` with `head`; `trainable`: every parameter gets a gradient (full
  /// fine-tuning), else all are frozen but the head's new parts (the classifier).
  public init(source: WeightSource, config: BertConfig, head: BertHead, backend: Backend,
              trainable: Bool, seed: UInt64) throws {
    self.config = config; self.backend = backend; self.head = head
    if case .classifier(let n) = head, n < 1 { throw VKFError.other("BertWeights: numLabels must be ≥ 1") }
    let names = Set(source.tensorNames)
    let prefix = names.contains(Self.encoderPrefix + "embeddings.word_embeddings.weight") ? Self.encoderPrefix : ""
    let path = source.weightsPath
    var rng = SplitMix64(seed: seed)
    let c = config
    var list: [(String, Tensor, Tensor?)] = []
    var fresh: [String] = []

    func stored(_ name: String, _ shape: [Int]) throws -> [Float]? {
      // Old BERT checkpoints call LayerNorm's parameters gamma / beta (transformers renames them).
      let legacy = name.replacingOccurrences(of: "LayerNorm.weight", with: "LayerNorm.gamma")
        .replacingOccurrences(of: "LayerNorm.bias", with: "LayerNorm.beta")
      guard let key = [name, legacy].first(where: names.contains) else { return nil }
      let got = try source.shape(of: key)
      guard got == shape else {
        throw ModelFileError(path, "tensor \(key) has shape \(got), expected \(shape) (config.json and the label count)")
      }
      return try source.floats(key)
    }
    func parameter(_ local: String, _ shape: [Int], outputName: String, train: Bool,
                   initial: (() -> [Float])? = nil) throws -> (Tensor, Tensor?) {
      let values: [Float]
      if let v = try stored(local, shape) {
        values = v
      } else if let initial {
        values = initial(); fresh.append(outputName)
      } else {
        throw ModelFileError(path, "has no tensor \(local) (a BERT checkpoint has every encoder tensor)")
      }
      let t = try backend.tensor(values, shape: shape)
      var g: Tensor?
      if train {
        let grad = try backend.allocate(shape)
        try backend.fill(grad, value: 0)
        g = grad
      }
      list.append((outputName, t, g))
      return (t, g)
    }
    func encoder(_ name: String, _ shape: [Int], initial: (() -> [Float])? = nil) throws -> (Tensor, Tensor?) {
      try parameter(prefix + name, shape, outputName: Self.encoderPrefix + name, train: trainable, initial: initial)
    }
    func linear(_ name: String, out: Int, in inFeatures: Int, initialise: Bool = false) throws -> Linear {
      let std = c.initializerRange
      let w = try encoder(name + ".weight", [out, inFeatures],
                          initial: initialise ? { rng.normals(count: out * inFeatures, std: std) } : nil)
      let b = try encoder(name + ".bias", [out], initial: initialise ? { [Float](repeating: 0, count: out) } : nil)
      return Linear(weight: w.0, bias: b.0, weightGrad: w.1, biasGrad: b.1)
    }
    func norm(_ name: String) throws -> LayerNormParameters {
      let w = try encoder(name + ".weight", [c.hiddenSize]), b = try encoder(name + ".bias", [c.hiddenSize])
      return LayerNormParameters(weight: w.0, bias: b.0, weightGrad: w.1, biasGrad: b.1)
    }
    let hidden = c.hiddenSize
    func zeros(_ n: Int) -> () -> [Float] { { [Float](repeating: 0, count: n) } }
    func mlm(_ name: String, _ shape: [Int], initial: @escaping () -> [Float]) throws -> (Tensor, Tensor?) {
      try parameter("cls.predictions." + name, shape, outputName: "cls.predictions." + name, train: trainable,
                    initial: initial)
    }

    let (h, f) = (c.hiddenSize, c.intermediateSize)
    (wordEmbeddings, wordEmbeddingsGrad) = try encoder("embeddings.word_embeddings.weight", [c.vocabSize, h])
    (positionEmbeddings, positionEmbeddingsGrad) = try encoder("embeddings.position_embeddings.weight", [c.maxPositions, h])
    (typeEmbeddings, typeEmbeddingsGrad) = try encoder("embeddings.token_type_embeddings.weight", [c.typeVocabSize, h])
    embeddingNorm = try norm("embeddings.LayerNorm")
    var layers: [BertLayerWeights] = []
    for l in 0..<c.layers {
      let p = "encoder.layer.\(l)."
      layers.append(BertLayerWeights(
        query: try linear(p + "attention.self.query", out: h, in: h),
        key: try linear(p + "attention.self.key", out: h, in: h),
        value: try linear(p + "attention.self.value", out: h, in: h),
        attentionOutput: try linear(p + "attention.output.dense", out: h, in: h),
        attentionNorm: try norm(p + "attention.output.LayerNorm"),
        intermediate: try linear(p + "intermediate.dense", out: f, in: h),
        output: try linear(p + "output.dense", out: h, in: f),
        outputNorm: try norm(p + "output.LayerNorm")))
    }
    self.layers = layers
    switch head {
    case .classifier(let numLabels):
      pooler = try linear("pooler.dense", out: h, in: h, initialise: true)
      // The classifier: trained always (it is the task's head), saved as PEFT's modules_to_save.
      let std = c.initializerRange
      let cw = try parameter("classifier.weight", [numLabels, h], outputName: "classifier.weight", train: true,
                             initial: { rng.normals(count: numLabels * h, std: std) })
      let cb = try parameter("classifier.bias", [numLabels], outputName: "classifier.bias", train: true,
                             initial: zeros(numLabels))
      classifier = Linear(weight: cw.0, bias: cb.0, weightGrad: cw.1, biasGrad: cb.1)
    case .maskedLM:
      if c.raw["tie_word_embeddings"] as? Bool == false {
        throw ModelFileError(path, "config.json sets tie_word_embeddings false; the masked-LM head is trained with "
          + "its decoder tied to the word embeddings (BERT's layout)")
      }
      let std = c.initializerRange
      let dw = try mlm("transform.dense.weight", [hidden, hidden], initial: { rng.normals(count: hidden * hidden, std: std) })
      let db = try mlm("transform.dense.bias", [hidden], initial: zeros(hidden))
      mlmTransform = Linear(weight: dw.0, bias: db.0, weightGrad: dw.1, biasGrad: db.1)
      let nw = try mlm("transform.LayerNorm.weight", [hidden], initial: { [Float](repeating: 1, count: hidden) })
      let nb = try mlm("transform.LayerNorm.bias", [hidden], initial: zeros(hidden))
      mlmNorm = LayerNormParameters(weight: nw.0, bias: nb.0, weightGrad: nw.1, biasGrad: nb.1)
      (mlmBias, mlmBiasGrad) = try mlm("bias", [c.vocabSize], initial: zeros(c.vocabSize))
    }
    named = list
    initialised = fresh
  }

  /// The parameters the optimizer updates, under their saved names; biases and LayerNorm
  /// weights take no weight decay (transformers' Trainer groups).
  public var trainableTensors: [TrainableTensor] {
    named.compactMap { p in
      p.gradient.map { TrainableTensor(name: p.name, value: p.value, gradient: $0, decays: Self.decays(p.name)) }
    }
  }

  /// False for biases and LayerNorm weights.
  public static func decays(_ name: String) -> Bool {
    !(name.hasSuffix(".bias") || name.contains("LayerNorm"))
  }

  /// Sets every gradient to zero.
  public func zeroGradients() throws {
    for p in named { if let g = p.gradient { try backend.fill(g, value: 0) } }
  }
}
