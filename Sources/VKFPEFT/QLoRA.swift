import VKFCore
import VKFModel

/// What `QLoRA.quantize` did.
public struct QuantizationReport: Sendable {
  /// Projections turned from dense f32 into NF4.
  public var projections: Int
  /// Their bytes before, as dense f32.
  public var denseBytes: Int
  /// Their bytes on the device after: packed NF4 (½ byte per weight) plus the block scales —
  /// with double quantisation one u8 code per block and one f32 scale per 256 blocks (the
  /// kernels decode them), otherwise one f32 absmax per block.
  public var quantizedBytes: Int
  /// Their bytes as bitsandbytes stores them: the same plus, with double quantisation, the
  /// f32 offset each weight keeps (here a push constant, not device memory).
  public var bitsandbytesBytes: Int

  public init(projections: Int = 0, denseBytes: Int = 0, quantizedBytes: Int = 0, bitsandbytesBytes: Int = 0) {
    self.projections = projections; self.denseBytes = denseBytes
    self.quantizedBytes = quantizedBytes; self.bitsandbytesBytes = bitsandbytesBytes
  }

  /// Device bytes saved.
  public var savedBytes: Int { denseBytes - quantizedBytes }
}

/// QLoRA (Dettmers et al. 2023): the frozen base projections in NF4 with bitsandbytes' exact
/// numbers, so a QLoRA run here sees the base weights a bitsandbytes run would.
public enum QLoRA {
  /// Quantisation settings (bitsandbytes' `BitsAndBytesConfig` for nf4).
  public struct Options: Sendable {
    /// Weights per absmax block (`blocksize`, default 64).
    public var blockSize = 64
    /// Quantise the absmax values too (`bnb_4bit_use_double_quant`, default true).
    public var doubleQuant = true

    public init(blockSize: Int = 64, doubleQuant: Bool = true) {
      self.blockSize = blockSize; self.doubleQuant = doubleQuant
    }
  }

  /// Replaces every dense projection's base in `weights` (the seven per layer; embedding,
  /// norms and LM head stay f32) by NF4 and releases the dense tensors. Projections already in
  /// NF4 are left alone. The base must be frozen (`trainable: .none` for those weights).
  /// Adapters already attached stay attached.
  public static func quantize(_ weights: DecoderWeights, options: Options = .init()) throws -> QuantizationReport {
    try checkBlockSize(options)
    var problem: PEFTError?
    weights.updateProjections { module, linear in
      if problem == nil, linear.weightGrad != nil {
        problem = PEFTError("QLoRA needs a frozen base but \(module).weight is trainable; "
          + "load the weights with trainable: .none")
      }
    }
    if let problem { throw problem }
    let be = weights.backend
    var report = QuantizationReport()
    var released: [String] = []
    try weights.updateProjections { module, linear in
      guard case .dense(let w) = linear.base else { return }
      linear.base = .nf4(try quantized(module, try be.floats(w), rows: linear.outFeatures, cols: linear.inFeatures,
                                       on: be, options: options, into: &report))
      released.append(module + ".weight")
    }
    for name in released { weights.releaseParameter(name) }
    return report
  }

  /// Loads `source` with every projection quantised to NF4 on the host as it is read — the
  /// dense f32 projections never reach the device (the device-memory high-water mark is the
  /// NF4 model's) — with the same numbers `quantize` gives. Embedding, norms and LM head
  /// stay f32; the base is frozen (attach adapters for training). `report` receives what
  /// was quantised.
  public static func load(from source: WeightSource, shape: TransformerShape, backend: Backend,
                          options: Options = .init(), frozenStorage: DType = .f32,
                          report: inout QuantizationReport) throws -> DecoderWeights {
    try checkBlockSize(options)
    var r = QuantizationReport()
    let weights = try DecoderWeights(from: source, shape: shape, backend: backend, trainable: .none,
                                   frozenStorage: frozenStorage) { module, values, rows, cols in
      .nf4(try quantized(module, values, rows: rows, cols: cols, on: backend, options: options, into: &r))
    }
    report = r
    return weights
  }

  private static func checkBlockSize(_ options: Options) throws {
    guard options.blockSize > 0, options.blockSize % 2 == 0 else {
      throw PEFTError("QLoRA block size must be a positive even number (got \(options.blockSize)); "
        + "bitsandbytes uses 64")
    }
  }

  /// One projection's values as an uploaded NF4 weight, counted into `report`.
  private static func quantized(_ module: String, _ values: [Float], rows: Int, cols: Int, on be: Backend,
                                options: Options, into report: inout QuantizationReport) throws -> NF4Weight {
    guard (rows * cols) % 2 == 0 else {
      throw PEFTError("\(module).weight has an odd number of values (\(rows)×\(cols)); NF4 packs pairs")
    }
    let q = try NF4Weight.quantizing(values, rows: rows, cols: cols, on: be, blockSize: options.blockSize,
                                     doubleQuant: options.doubleQuant)
    report.projections += 1
    report.denseBytes += values.count * 4
    report.quantizedBytes += q.bytes
    report.bitsandbytesBytes += q.bytes + (options.doubleQuant ? 4 : 0)
    return q
  }
}
