// How much device and host memory a training run needs, by category, before allocating it.
import Foundation
import VKFCore
import VKFModel

/// Device and host bytes of a run by category, from the model shape and the settings.
///
/// Activations follow `VKFModel`'s activation arena (every buffer rounded up to 64 floats):
/// L+1 residual streams, one set of saved layer activations per layer (one set in total with
/// checkpointing), the logits and the scratch buffers — byte for byte what the model allocates
/// (tested against the arena). Adapter workspaces (N × r per adapted projection), the optimizer's
/// small buffers and the backend's own pools are not counted: the estimate is a lower bound.
public struct MemoryEstimate: Equatable, Sendable {
  /// What the bytes are for.
  public enum Category: String, CaseIterable, Sendable {
    case weights = "weights"
    case adapters = "LoRA parameters"
    case gradients = "gradients"
    case optimizerState = "optimizer state"
    case activations = "activations"
  }

  /// One row of the table.
  public struct Line: Equatable, Sendable {
    public var category: Category
    public var deviceBytes: Int
    public var hostBytes: Int
  }

  /// The rows, in `Category` order.
  public var lines: [Line]
  /// What the run is, for the advice (which knobs are still available).
  public var settings: Settings

  /// The knobs the estimate depends on.
  public struct Settings: Equatable, Sendable {
    /// Rows per micro-batch.
    public var microBatchSize: Int
    /// Tokens per row (the longest row: max_seq_length, or the packed length).
    public var seqLength: Int
    /// Activations recomputed per layer in the backward pass.
    public var checkpointing: Bool
    /// The seven projections of each layer are NF4 (QLoRA).
    public var nf4Projections: Bool
    /// NF4 block scales are double-quantised (u8 codes + one f32 per 256 blocks, instead of
    /// one f32 per block).
    public var nf4DoubleQuant: Bool
    /// Every model parameter trains (no adapters).
    public var fullFineTuning: Bool
    /// Trained adapter elements (LoRA A and B, DoRA magnitudes); 0 for full fine-tuning.
    public var adapterElements: Int
    /// Where the AdamW moments live (`.hostVisible`: paged).
    public var optimizerState: MemoryKind
    /// Device window of paged optimizer state, in elements.
    public var optimizerWindowElements: Int
    /// Attention through `Backend.attention` (one log-sum-exp per row instead of T
    /// probabilities), as `DecoderModel.fusedAttention`.
    public var fusedAttention: Bool
    /// Storage of the frozen matrices (mixed precision: f16 / bf16), as
    /// `DecoderWeights.frozenStorage`; trained parameters, norms and biases stay f32.
    public var frozenStorage: DType
    /// Rows per LM-head chunk (`DecoderModel.headChunkTokens`); nil: the model's default.
    public var headChunkTokens: Int?
    /// Storage of the saved activations (`DecoderModel.activationType`; 16-bit only matters
    /// without checkpointing).
    public var activationType: DType
    /// A mixture-of-experts model's expert-row alignment (`Backend.moeRowAlignment`); the
    /// default, 1, is both backends'.
    public var moeRowAlignment = 1

    public init(microBatchSize: Int, seqLength: Int, checkpointing: Bool = false, nf4Projections: Bool = false,
                nf4DoubleQuant: Bool = true,
                fullFineTuning: Bool = false, adapterElements: Int = 0, optimizerState: MemoryKind = .device,
                optimizerWindowElements: Int = AdamW.defaultWindowElements, fusedAttention: Bool = true,
                frozenStorage: DType = .f32, headChunkTokens: Int? = nil, activationType: DType = .f32) {
      self.microBatchSize = microBatchSize; self.seqLength = seqLength; self.checkpointing = checkpointing
      self.nf4Projections = nf4Projections; self.nf4DoubleQuant = nf4DoubleQuant; self.fullFineTuning = fullFineTuning
      self.adapterElements = adapterElements; self.optimizerState = optimizerState
      self.optimizerWindowElements = optimizerWindowElements; self.fusedAttention = fusedAttention
      self.frozenStorage = frozenStorage; self.headChunkTokens = headChunkTokens
      self.activationType = activationType
    }
  }

  /// Estimates a run of `shape` with `settings`.
  public init(shape s: TransformerShape, settings: Settings) {
    self.settings = settings
    func aligned(_ n: Int) -> Int { (n + 63) / 64 * 64 }
    let f32 = 4
    // Weights: NF4 projections take 4 bits + their block scales (NF4Weight.bytes).
    var weightBytes = 0, parameterElements = 0
    let projectionSuffixes = ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                              "gate_proj.weight", "up_proj.weight", "down_proj.weight",
                              "qkv_proj.weight", "gate_up_proj.weight",  // Phi-3's fused ones
                              "w1.weight", "w2.weight", "w3.weight"]  // Mixtral's experts
    for (name, shape) in s.parameterShapes {
      let n = shape.reduce(1, *)
      parameterElements += aligned(n)
      if settings.nf4Projections, projectionSuffixes.contains(where: { name.hasSuffix($0) }) {
        let blocks = (n + NF4.defaultBlockSize - 1) / NF4.defaultBlockSize
        let nested = (blocks + NF4DoubleQuant.blockSize - 1) / NF4DoubleQuant.blockSize
        weightBytes += (n + 1) / 2 + (settings.nf4DoubleQuant ? blocks + nested * f32 : blocks * f32)
      } else if !settings.fullFineTuning, shape.count == 2 {
        weightBytes += n * settings.frozenStorage.size  // a frozen matrix
      } else {
        weightBytes += n * f32
      }
    }
    let trained = settings.fullFineTuning ? parameterElements : settings.adapterElements
    let gradientBytes = trained * f32
    let stateBytes = AdamW.stateBytes(elements: trained)
    let paged = settings.optimizerState == .hostVisible
    let windowBytes = paged ? AdamW.stateBytes(elements: min(settings.optimizerWindowElements, trained)) : 0

    // Activations: the arena as the model carves it (every block's buffers included).
    let activationBytes = DecoderModel.activationBytes(
      shape: s, batch: settings.microBatchSize, tokens: settings.seqLength, checkpointing: settings.checkpointing,
      headChunkTokens: settings.headChunkTokens, fusedAttention: settings.fusedAttention,
      activationType: settings.activationType, moeRowAlignment: settings.moeRowAlignment)

    lines = [
      Line(category: .weights, deviceBytes: weightBytes, hostBytes: 0),
      Line(category: .adapters, deviceBytes: settings.fullFineTuning ? 0 : settings.adapterElements * f32, hostBytes: 0),
      Line(category: .gradients, deviceBytes: gradientBytes, hostBytes: 0),
      Line(category: .optimizerState, deviceBytes: paged ? windowBytes : stateBytes, hostBytes: paged ? stateBytes : 0),
      Line(category: .activations, deviceBytes: activationBytes, hostBytes: 0),
    ]
  }

  /// Trained elements of LoRA with rank `rank` on the projections whose module name ends in
  /// one of `targetModules` (`q_proj`, …, `lm_head`): r·(in + out) each, plus `out` per
  /// projection for DoRA's magnitude; on a mixture-of-experts model's sparse layers, per
  /// targeted expert parameter (`gate_up_proj`, `down_proj`) r·E·(in + out) (gate_up's out
  /// is 2F).
  public static func loraElements(shape s: TransformerShape, rank: Int, targetModules: Set<String>,
                                  dora: Bool = false, expertParameters: Set<String> = []) -> Int {
    let dims: [(String, Int, Int)] = [
      ("q_proj", s.hidden, s.qWidth), ("k_proj", s.hidden, s.kvWidth), ("v_proj", s.hidden, s.kvWidth),
      ("o_proj", s.qWidth, s.hidden), ("gate_proj", s.hidden, s.intermediate), ("up_proj", s.hidden, s.intermediate),
      ("down_proj", s.intermediate, s.hidden),
    ]
    var total = 0
    var counted = Set<String>()
    // Phi-3: one A per fused projection, its B over every part's rows.
    func short(_ suffix: String) -> String { String(suffix.split(separator: ".").last ?? "") }
    for g in s.fusedGroups {
      let parts = g.parts.map { short($0.suffix) }
      guard parts.contains(where: targetModules.contains) || targetModules.contains(short(g.fused)) else { continue }
      let fanOut = g.parts.reduce(0) { $0 + $1.rows }
      total += s.layers * (rank * (s.hidden + fanOut) + (dora ? fanOut : 0))
      counted.formUnion(parts)
    }
    for (name, fanIn, fanOut) in dims where targetModules.contains(name) && !counted.contains(name) {
      total += s.layers * (rank * (fanIn + fanOut) + (dora ? fanOut : 0))
    }
    if targetModules.contains("lm_head") { total += rank * (s.hidden + s.vocab) + (dora ? s.vocab : 0) }
    if let m = s.moe {
      let perLayer = (expertParameters.contains("gate_up_proj") ? rank * m.experts * (s.hidden + 2 * m.intermediate) : 0)
        + (expertParameters.contains("down_proj") ? rank * m.experts * (m.intermediate + s.hidden) : 0)
      total += m.sparseLayerCount * perLayer
    }
    return total
  }

  /// Total device bytes.
  public var deviceBytes: Int { lines.reduce(0) { $0 + $1.deviceBytes } }
  /// Total host bytes (paged optimizer state).
  public var hostBytes: Int { lines.reduce(0) { $0 + $1.hostBytes } }
  /// Device bytes of everything but the optimizer state (what `.auto` placement weighs).
  public var deviceBytesExcludingOptimizer: Int {
    lines.filter { $0.category != .optimizerState }.reduce(0) { $0 + $1.deviceBytes }
  }

  /// The estimate as an aligned text table with a total row.
  public var table: String {
    var rows = [("", "device", "host")]
    for l in lines where l.deviceBytes > 0 || l.hostBytes > 0 {
      rows.append((l.category.rawValue, Self.format(l.deviceBytes), l.hostBytes > 0 ? Self.format(l.hostBytes) : "-"))
    }
    rows.append(("total", Self.format(deviceBytes), hostBytes > 0 ? Self.format(hostBytes) : "-"))
    let w0 = rows.map(\.0.count).max() ?? 0, w1 = rows.map(\.1.count).max() ?? 0, w2 = rows.map(\.2.count).max() ?? 0
    func pad(_ s: String, _ w: Int, left: Bool) -> String {
      let p = String(repeating: " ", count: max(0, w - s.count))
      return left ? s + p : p + s
    }
    return rows.map { pad($0.0, w0, left: true) + "  " + pad($0.1, w1, left: false) + "  " + pad($0.2, w2, left: false) }
      .joined(separator: "\n")
  }

  /// Throws `TrainingError.doesNotFit` (one line, with advice) when the device total
  /// exceeds `budget` bytes.
  public func check(budget: Int, of what: String = "the budget") throws {
    guard deviceBytes > budget else { return }
    throw TrainingError.doesNotFit("training needs about \(Self.format(deviceBytes)) of device memory but \(what) is "
      + "\(Self.format(budget)) (\(largestCategories)); try \(advice)")
  }

  /// The options that would lower device memory, in the order of their usual effect.
  public var advice: String {
    var a: [String] = []
    if settings.fullFineTuning { a.append("LoRA instead of full fine-tuning (--method lora)") }
    else if !settings.nf4Projections { a.append("QLoRA (--method qlora)") }
    if !settings.checkpointing { a.append("--gradient-checkpointing") }
    if settings.microBatchSize > 1 {
      a.append("a smaller --batch-size (raise --gradient-accumulation-steps to keep the effective batch)")
    }
    if settings.optimizerState == .device { a.append("--optimizer-state host") }
    a.append("a shorter --max-seq-length")
    a.append("a larger --memory-budget if the device has more memory")
    return a.joined(separator: ", ")
  }

  /// Turns a backend's out-of-memory error into the same one-line advice (nil for other
  /// errors): VKFVulkan and VKFCPU throw `VKFError.outOfMemory` when an allocation fails.
  public func explain(_ error: Error) -> TrainingError? {
    guard case VKFError.outOfMemory(let detail) = error else { return nil }
    return .doesNotFit("out of device memory (\(detail)); the run was estimated at \(Self.format(deviceBytes)) "
      + "(\(largestCategories)); try \(advice)")
  }

  /// "activations 1.2 GiB, weights 540 MiB": the two largest device categories.
  private var largestCategories: String {
    lines.sorted { $0.deviceBytes > $1.deviceBytes }.prefix(2).filter { $0.deviceBytes > 0 }
      .map { "\($0.category.rawValue) \(Self.format($0.deviceBytes))" }.joined(separator: ", ")
  }

  /// Bytes as B, KiB, MiB or GiB with one decimal.
  public static func format(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(bytes), i = 0
    while v >= 1024, i < units.count - 1 { v /= 1024; i += 1 }
    return i == 0 ? "\(bytes) B" : String(format: "%.1f", v) + " " + units[i]
  }
}
