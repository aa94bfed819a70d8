import VKFCore
import VKFModel

/// What `QLoRA.quantize` did.
public struct QuantizationReport: Sendable {
  /// Projections turned from dense f32 into NF4.
  public var projections: Int
  /// Their bytes before, as dense f32.
  public var denseBytes: Int
  /// Their bytes on the device after: packed NF4 (½ byte per weight) plus one f32 absmax per
  /// block (the kernels read f32; double quantisation changes the values, not this size).
  public var quantizedBytes: Int
  /// Their bytes as bitsandbytes stores them: with double quantisation, one u8 code per block
  /// plus one f32 scale per 256 blocks and the f32 offset, instead of an f32 absmax per block.
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

  /// Blocks of absmax values per nested scale (bitsandbytes' `quantize_blockwise(…, blocksize=256)`).
  public static let nestedBlockSize = 256

  /// Replaces every dense projection's base in `weights` (the seven per layer; embedding,
  /// norms and LM head stay f32) by NF4 and releases the dense tensors. Projections already in
  /// NF4 are left alone. The base must be frozen (`trainable: .none` for those weights).
  /// Adapters already attached stay attached.
  public static func quantize(_ weights: LlamaWeights, options: Options = .init()) throws -> QuantizationReport {
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
                          options: Options = .init(), report: inout QuantizationReport) throws -> LlamaWeights {
    try checkBlockSize(options)
    var r = QuantizationReport()
    let weights = try LlamaWeights(from: source, shape: shape, backend: backend, trainable: .none) { module, values, rows, cols in
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
    var (packed, absmax) = NF4.quantize(values, blockSize: options.blockSize)
    if options.doubleQuant { absmax = doubleQuantized(absmax).dequantized }
    let q = NF4Weight(packed: try be.tensor(packed, shape: [packed.count], .u8),
                      absmax: try be.tensor(absmax, shape: [absmax.count]),
                      rows: rows, cols: cols, blockSize: options.blockSize)
    report.projections += 1
    report.denseBytes += values.count * 4
    report.quantizedBytes += packed.count + absmax.count * 4
    let nested = (absmax.count + nestedBlockSize - 1) / nestedBlockSize
    report.bitsandbytesBytes += packed.count + (options.doubleQuant ? absmax.count + nested * 4 + 4 : absmax.count * 4)
    return q
  }

  // MARK: - Double quantisation (bitsandbytes quantize_4bit(compress_statistics=True))

  /// bitsandbytes' double quantisation of the per-block absmax: offset = mean(absmax);
  /// absmax − offset quantised blockwise (256) to the signed 8-bit dynamic map with one f32
  /// scale per block; `dequantized` = map[code]·scale + offset, what `dequantize_4bit` uses.
  /// Codes are the nearest map entries (bitsandbytes' default and CUDA kernels); its CPU
  /// kernel's approximate table search picks the second-nearest for ~0.4 % of values.
  public static func doubleQuantized(_ absmax: [Float])
    -> (codes: [UInt8], scales: [Float], offset: Float, dequantized: [Float])
  {
    guard !absmax.isEmpty else { return ([], [], 0, []) }
    // torch's f32 mean: sum (here in Double, then rounded), divided by the count in f32.
    let offset = Float(absmax.reduce(0.0) { $0 + Double($1) }) / Float(absmax.count)
    let centered = absmax.map { $0 - offset }
    let map = dynamicMap
    var codes = [UInt8](repeating: 0, count: centered.count)
    var scales: [Float] = []
    var dequantized = [Float](repeating: 0, count: centered.count)
    for start in stride(from: 0, to: centered.count, by: nestedBlockSize) {
      let block = start..<min(centered.count, start + nestedBlockSize)
      let scale = centered[block].reduce(Float(0)) { max($0, abs($1)) }
      scales.append(scale)
      for i in block {
        let normed = scale > 0 ? min(1, max(-1, centered[i] / scale)) : 0
        let c = nearestDynamicCode(normed, map)
        codes[i] = c
        dequantized[i] = map[Int(c)] * scale + offset
      }
    }
    return (codes, scales, offset, dequantized)
  }

  /// Index of the map entry nearest to `x` (the lower one on a tie, like `torch.argmin`).
  static func nearestDynamicCode(_ x: Float, _ map: [Float]) -> UInt8 {
    // First entry ≥ x, then compare with its lower neighbour.
    var lo = 0, hi = map.count - 1
    while lo < hi {
      let mid = (lo + hi) / 2
      if map[mid] < x { lo = mid + 1 } else { hi = mid }
    }
    if lo > 0, abs(x - map[lo - 1]) <= abs(map[lo] - x) { lo -= 1 }
    return UInt8(lo)
  }

  /// bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`, sorted:
  /// for i in 0..<7, the midpoints of `torch.linspace(0.1, 1, 2^i + 1)` (f32) times ±10^(i−6),
  /// plus 0 and 1 — 256 values in [−0.993, 1].
  public static let dynamicMap: [Float] = {
    var data: [Float] = []
    let decades: [Double] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1]
    for i in 0..<7 {
      let b = linspaceF32(start: 0.1, end: 1, steps: (1 << i) + 1)
      let means = (0..<(b.count - 1)).map { (b[$0] + b[$0 + 1]) / 2 }
      let scale = Float(decades[i])  // torch multiplies an f32 tensor by the scalar in f32
      data += means.map { scale * $0 }
      data += means.map { -scale * $0 }
    }
    data += [0, 1]
    return data.sorted()
  }()

  /// `torch.linspace(start, end, steps, dtype=float32)` as ATen's CPU kernel computes it: an
  /// f32 step; the first half counts up from start, the second half down from end, each value
  /// one fused multiply-add (checked bit for bit against torch 2.13 in QLoRATests).
  static func linspaceF32(start: Float, end: Float, steps: Int) -> [Float] {
    guard steps > 1 else { return steps == 1 ? [start] : [] }
    let step = (end - start) / Float(steps - 1)
    let halfway = steps / 2
    return (0..<steps).map { i in
      i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(steps - i - 1))
    }
  }
}
