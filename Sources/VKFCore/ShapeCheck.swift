/// Shape and dtype rules of every op, checked once here and called by every backend before
/// it queues work, so both backends reject the same calls with the same errors.
public enum ShapeCheck {
  // MARK: - Helpers

  static func fail(_ op: Op, _ detail: String) -> VKFError {
    .shapeMismatch(op: op.rawValue, detail: detail)
  }

  /// Throws unless every tensor has `dtype`.
  public static func dtype(_ op: Op, _ dtype: DType, _ tensors: Tensor?...) throws {
    for case let t? in tensors where t.dtype != dtype {
      throw VKFError.dtypeMismatch(op: op.rawValue, detail: "\(t) where \(dtype) is required")
    }
  }

  /// Throws unless every tensor has `count` elements.
  public static func count(_ op: Op, _ count: Int, _ tensors: Tensor?...) throws {
    for case let t? in tensors where t.count != count {
      throw fail(op, "\(t) has \(t.count) elements, expected \(count)")
    }
  }

  /// Throws unless `a` and `b` hold the same number of elements.
  public static func sameCount(_ op: Op, _ a: Tensor, _ b: Tensor) throws {
    guard a.count == b.count else { throw fail(op, "\(a) vs \(b)") }
  }

  /// Throws if an output overlaps an input it would overwrite while reading.
  public static func noOverlap(_ op: Op, output: Tensor, inputs: Tensor?...) throws {
    for case let i? in inputs where output.overlaps(i) {
      throw fail(op, "output \(output) overlaps input \(i)")
    }
  }

  /// For ops that read element i and then write element i: an output may be exactly an
  /// input (in place) but must not partially overlap one.
  public static func inPlaceOrDisjoint(_ op: Op, output: Tensor, inputs: Tensor?...) throws {
    for case let i? in inputs where output.overlaps(i) {
      guard output.byteOffset == i.byteOffset, output.byteCount == i.byteCount else {
        throw fail(op, "output \(output) partially overlaps input \(i)")
      }
    }
  }

  // MARK: - Memory

  /// Byte size of a new tensor; negative dimensions and overflow throw.
  public static func allocation(_ shape: [Int], _ dtype: DType) throws -> Int {
    guard shape.allSatisfy({ $0 >= 0 }) else {
      throw VKFError.shapeMismatch(op: "allocate", detail: "negative dimension in \(shape)")
    }
    var bytes = dtype.size
    for d in shape {
      let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
      guard !overflow else { throw VKFError.outOfMemory(detail: "\(dtype) \(shape) overflows the address space") }
      bytes = p
    }
    return bytes
  }

  /// upload/download move exactly the tensor's bytes.
  public static func transfer(_ op: String, bytes: Int, _ t: Tensor) throws {
    guard bytes == t.byteCount else {
      throw VKFError.shapeMismatch(op: op, detail: "\(bytes) bytes for \(t) of \(t.byteCount) bytes")
    }
  }

  /// `fill` values must be representable in integer tensors (a plain conversion would trap).
  public static func fillValue(_ value: Float, _ dtype: DType) throws {
    switch dtype {
    case .i32:
      guard value.isFinite, value >= -2_147_483_648, value < 2_147_483_648 else {
        throw VKFError.outOfRange(op: "fill", detail: "\(value) does not fit i32")
      }
    case .u8:
      guard value.isFinite, value > -1, value < 256 else {
        throw VKFError.outOfRange(op: "fill", detail: "\(value) does not fit u8")
      }
    case .f32, .f16, .bf16: break
    }
  }

  public static func copy(_ src: Tensor, _ dst: Tensor) throws {
    try sameCount(.copy, src, dst)
    guard src.dtype == dst.dtype else {
      throw VKFError.dtypeMismatch(op: "copy", detail: "\(src) → \(dst); use cast")
    }
  }

  public static func cast(_ src: Tensor, _ dst: Tensor) throws {
    try sameCount(.cast, src, dst)
    guard src.dtype.isFloat, dst.dtype.isFloat else {
      throw VKFError.dtypeMismatch(op: "cast", detail: "\(src) → \(dst): float types only")
    }
    try noOverlap(.cast, output: dst, inputs: src)
  }

  /// Validates a permute and returns x's shape and its element strides padded on the left
  /// to rank 4 (size 1, stride 0), and `dims` padded to match.
  public static func permute(_ x: Tensor, _ dims: [Int], _ out: Tensor) throws
    -> (shape: [Int], strides: [Int], dims: [Int])
  {
    try dtype(.permute, .f32, x, out)
    guard (1...4).contains(x.rank), dims.count == x.rank, Set(dims) == Set(0..<x.rank) else {
      throw fail(.permute, "dims \(dims) is not a permutation of the \(x.rank) axes of \(x.shape) (rank 1…4)")
    }
    guard out.shape == dims.map({ x.shape[$0] }) else {
      throw fail(.permute, "out \(out.shape) ≠ \(x.shape) permuted by \(dims)")
    }
    try noOverlap(.permute, output: out, inputs: x)
    let pad = 4 - x.rank
    var strides = [Int](repeating: 0, count: x.rank), s = 1
    for i in stride(from: x.rank - 1, through: 0, by: -1) { strides[i] = s; s *= x.shape[i] }
    return ([Int](repeating: 1, count: pad) + x.shape, [Int](repeating: 0, count: pad) + strides,
            Array(0..<pad) + dims.map { $0 + pad })
  }

  // MARK: - Linear algebra

  /// Validates a (batched) matmul and returns its geometry.
  public static func matmul(_ a: Tensor, _ b: Tensor, _ c: Tensor, transposeA: Bool,
                            transposeB: Bool) throws -> GemmShape {
    // A and B may be stored 16-bit (frozen weights, saved activations); C and the
    // accumulation are f32.
    try dtype(.matmul, .f32, c)
    for t in [a, b] where !t.dtype.isFloat {
      throw VKFError.dtypeMismatch(op: Op.matmul.rawValue, detail: "\(t) where f32, f16 or bf16 is required")
    }
    for t in [a, b, c] where t.rank < 2 || t.rank > 3 {
      throw fail(.matmul, "\(t): operands are rank 2 or 3 (batch first)")
    }
    func split(_ t: Tensor) -> (batch: Int, rows: Int, cols: Int) {
      t.rank == 3 ? (t.shape[0], t.shape[1], t.shape[2]) : (1, t.shape[0], t.shape[1])
    }
    let (ba, ra, ca) = split(a), (bb, rb, cb) = split(b), (bc, m, n) = split(c)
    let (am, ak) = transposeA ? (ca, ra) : (ra, ca)
    let (bk, bn) = transposeB ? (cb, rb) : (rb, cb)
    guard am == m, bn == n, ak == bk else {
      throw fail(.matmul, "op(A) \(am)×\(ak) · op(B) \(bk)×\(bn) → C \(m)×\(n)"
        + " (A \(a.shape)\(transposeA ? "ᵀ" : ""), B \(b.shape)\(transposeB ? "ᵀ" : ""))")
    }
    guard (ba == bc || ba == 1), (bb == bc || bb == 1) else {
      throw fail(.matmul, "batch sizes A \(ba), B \(bb), C \(bc) (1 broadcasts)")
    }
    try noOverlap(.matmul, output: c, inputs: a, b)
    return GemmShape(batch: bc, m: m, n: n, k: ak,
                     strideA: ba == 1 ? 0 : ra * ca, strideB: bb == 1 ? 0 : rb * cb,
                     strideC: m * n, lda: ca, ldb: cb)
  }

  public static func nf4(_ op: Op, _ w: NF4Weight) throws {
    try dtype(op, .u8, w.packed)
    let n = w.rows * w.cols
    guard w.blockSize > 0, w.blockSize % 2 == 0, n % 2 == 0 else {
      throw fail(op, "NF4 \(w.rows)×\(w.cols) block \(w.blockSize): even sizes required")
    }
    try count(op, n / 2, w.packed)
    switch w.scales {
    case .f32(let absmax):
      try dtype(op, .f32, absmax)
      try count(op, w.blockCount, absmax)
    case .doubleQuantized(let codes, let scales, let offset):
      try dtype(op, .u8, codes)
      try dtype(op, .f32, scales)
      try count(op, w.blockCount, codes)
      try count(op, (w.blockCount + NF4DoubleQuant.blockSize - 1) / NF4DoubleQuant.blockSize, scales)
      guard offset.isFinite else { throw fail(op, "NF4 absmax offset \(offset) is not finite") }
    }
  }

  public static func dequantizeNF4(_ w: NF4Weight, _ out: Tensor) throws {
    try nf4(.dequantizeNF4, w)
    try dtype(.dequantizeNF4, .f32, out)
    try count(.dequantizeNF4, w.rows * w.cols, out)
  }

  /// Returns (m, n, k) of y (m, n) = x (m, k) · op(W).
  public static func matmulNF4(_ x: Tensor, _ w: NF4Weight, _ y: Tensor, transposeB: Bool)
    throws -> (m: Int, n: Int, k: Int)
  {
    try nf4(.matmulNF4, w)
    return try quantizedMatmul(.matmulNF4, x, rows: w.rows, cols: w.cols, y, transposeB: transposeB)
  }

  /// y (m, n) = x (m, k) · op(W) with W (rows, cols) quantised: x may be stored 16-bit (QLoRA's
  /// bnb_4bit_compute_dtype activations); y accumulates f32. Returns (m, n, k).
  static func quantizedMatmul(_ op: Op, _ x: Tensor, rows: Int, cols: Int, _ y: Tensor, transposeB: Bool)
    throws -> (m: Int, n: Int, k: Int)
  {
    try dtype(op, .f32, y)
    guard x.dtype.isFloat else {
      throw VKFError.dtypeMismatch(op: op.rawValue, detail: "\(x) where f32, f16 or bf16 is required")
    }
    let (k, n) = transposeB ? (cols, rows) : (rows, cols)
    guard x.lastDim == k, y.lastDim == n, x.rowCount == y.rowCount else {
      throw fail(op, "x \(x.shape) · W\(transposeB ? "ᵀ" : "") (\(k)×\(n)) → y \(y.shape)")
    }
    try noOverlap(op, output: y, inputs: x)
    return (x.rowCount, n, k)
  }

  /// An int8 weight's tensors agree with its shape and block size.
  static func int8(_ op: Op, _ w: Int8Weight) throws {
    guard w.rows >= 0, w.cols >= 0, w.blockSize > 0 else {
      throw fail(op, "int8 weight (\(w.rows), \(w.cols)) with block size \(w.blockSize)")
    }
    guard w.blockSize >= w.cols ? w.blockSize % max(w.cols, 1) == 0 : w.cols % w.blockSize == 0 else {
      throw fail(op, "int8 block size \(w.blockSize) neither divides nor is a multiple of the row length \(w.cols)")
    }
    try dtype(op, .u8, w.values)
    try dtype(op, .f32, w.scales, w.zeroPoints)
    try count(op, w.rows * w.cols, w.values)
    try count(op, w.blockCount, w.scales)
    if let z = w.zeroPoints { try count(op, w.blockCount, z) }
  }

  /// Returns (rows, cols) of a rank-2 w, `out` of its shape; q4_0 needs cols a multiple of 32.
  public static func fakeQuantize(_ w: Tensor, kind: FakeQuant, _ out: Tensor) throws -> (rows: Int, cols: Int) {
    try dtype(.fakeQuantize, .f32, w, out)
    guard w.rank == 2, out.shape == w.shape else { throw fail(.fakeQuantize, "w \(w.shape) → out \(out.shape)") }
    let (rows, cols) = (w.shape[0], w.shape[1])
    guard kind != .q4_0 || cols % 32 == 0 else {
      throw fail(.fakeQuantize, "Q4_0 fake quantisation needs rows of whole 32-value blocks, got \(cols)")
    }
    return (rows, cols)
  }

  public static func dequantizeInt8(_ w: Int8Weight, _ out: Tensor) throws {
    try int8(.dequantizeInt8, w)
    try dtype(.dequantizeInt8, .f32, out)
    try count(.dequantizeInt8, w.rows * w.cols, out)
  }

  /// Returns (m, n, k) of y (m, n) = x (m, k) · op(W).
  public static func matmulInt8(_ x: Tensor, _ w: Int8Weight, _ y: Tensor, transposeB: Bool)
    throws -> (m: Int, n: Int, k: Int)
  {
    try int8(.matmulInt8, w)
    return try quantizedMatmul(.matmulInt8, x, rows: w.rows, cols: w.cols, y, transposeB: transposeB)
  }

  public static func loraForward(_ x: Tensor, loraX: Tensor?, base: LinearWeight, a: Tensor,
                                 b: Tensor, y: Tensor, xa: Tensor) throws {
    try dtype(.loraForward, .f32, x, loraX, a, b, y, xa)
    let m = x.rowCount, inF = base.inFeatures, outF = base.outFeatures
    guard a.rank == 2, b.rank == 2 else { throw fail(.loraForward, "A \(a.shape), B \(b.shape) must be rank 2") }
    let r = a.shape[0]
    guard x.lastDim == inF, a.shape[1] == inF, b.shape == [outF, r],
          y.rowCount == m, y.lastDim == outF, xa.rowCount == m, xa.lastDim == r,
          loraX.map({ $0.shape == x.shape }) ?? true else {
      throw fail(.loraForward, "x \(x.shape), base (\(outF), \(inF)), A \(a.shape), "
        + "B \(b.shape), y \(y.shape), xa \(xa.shape)")
    }
    if case .dense(let w) = base, !w.dtype.isFloat {
      throw VKFError.dtypeMismatch(op: Op.loraForward.rawValue, detail: "base \(w) where f32, f16 or bf16 is required")
    }
    if case .nf4(let q) = base { try nf4(.loraForward, q) }
    if case .int8(let q) = base { try int8(.loraForward, q) }
    try noOverlap(.loraForward, output: y, inputs: x, loraX, a, b, xa)
  }

  // MARK: - Transformer blocks

  public static func rmsNorm(_ x: Tensor, _ weight: Tensor, _ out: Tensor, _ rstd: Tensor) throws {
    try dtype(.rmsNorm, .f32, x, weight, out, rstd)
    try count(.rmsNorm, x.lastDim, weight)
    try sameCount(.rmsNorm, x, out)
    try count(.rmsNorm, x.rowCount, rstd)
    try noOverlap(.rmsNorm, output: rstd, inputs: x, weight)
  }

  public static func rmsNormBackward(_ dOut: Tensor, _ x: Tensor, _ weight: Tensor,
                                     _ rstd: Tensor, _ dx: Tensor, _ dWeight: Tensor?) throws {
    try dtype(.rmsNormBackward, .f32, dOut, x, weight, rstd, dx, dWeight)
    try count(.rmsNormBackward, x.count, dOut, dx)
    try count(.rmsNormBackward, x.lastDim, weight, dWeight)
    try count(.rmsNormBackward, x.rowCount, rstd)
    try noOverlap(.rmsNormBackward, output: dx, inputs: x, weight, rstd)
    if let dWeight { try noOverlap(.rmsNormBackward, output: dWeight, inputs: dOut, x, dx) }
  }

  /// Elementwise activations: every tensor f32 with the first one's element count.
  public static func activation(_ op: Op, _ tensors: Tensor...) throws {
    for t in tensors {
      try dtype(op, .f32, t)
      try sameCount(op, tensors[0], t)
    }
  }

  public static func layerNorm(_ x: Tensor, _ weight: Tensor, _ bias: Tensor, _ out: Tensor, _ mean: Tensor,
                               _ rstd: Tensor) throws {
    try dtype(.layerNorm, .f32, x, weight, bias, out, mean, rstd)
    try count(.layerNorm, x.lastDim, weight, bias)
    try sameCount(.layerNorm, x, out)
    try count(.layerNorm, x.rowCount, mean, rstd)
    try noOverlap(.layerNorm, output: mean, inputs: x, weight, bias, rstd)
    try noOverlap(.layerNorm, output: rstd, inputs: x, weight, bias)
  }

  public static func layerNormBackward(_ dOut: Tensor, _ x: Tensor, _ weight: Tensor, _ mean: Tensor,
                                       _ rstd: Tensor, _ dx: Tensor, _ dWeight: Tensor?, _ dBias: Tensor?) throws {
    try dtype(.layerNormBackward, .f32, dOut, x, weight, mean, rstd, dx, dWeight, dBias)
    try count(.layerNormBackward, x.count, dOut, dx)
    try count(.layerNormBackward, x.lastDim, weight, dWeight, dBias)
    try count(.layerNormBackward, x.rowCount, mean, rstd)
    try noOverlap(.layerNormBackward, output: dx, inputs: x, weight, mean, rstd)
    for case let d? in [dWeight, dBias] { try noOverlap(.layerNormBackward, output: d, inputs: dOut, x, dx) }
  }

  public static func rope(_ op: Op, _ x: Tensor, _ positions: Tensor, _ invFreq: Tensor,
                          _ out: Tensor) throws {
    try dtype(op, .f32, x, invFreq, out)
    try dtype(op, .i32, positions)
    guard x.rank == 3, x.shape[2] % 2 == 0 else {
      throw fail(op, "\(x): (tokens, heads, headDim) with even headDim required")
    }
    try sameCount(op, x, out)
    try count(op, x.shape[0], positions)
    try count(op, x.shape[2] / 2, invFreq)
  }

  /// A sliding window: 0 (none) or a positive number of keys that fits a shader `uint`.
  public static func window(_ op: Op, _ window: Int) throws {
    guard window >= 0, window <= Int(UInt32.max) else {
      throw fail(op, "sliding window \(window): 0 (none) or a positive key count required")
    }
  }

  /// An attention mask for batch size `batch`: a valid window and cap, no window without
  /// causality (a bidirectional window is not implemented), key lengths i32 (B).
  public static func attentionMask(_ op: Op, _ mask: AttentionMask, batch: Int) throws {
    try window(op, mask.window)
    try softcap(op, mask.softcap)
    if !mask.causal, mask.window != 0 {
      throw fail(op, "sliding window \(mask.window) on bidirectional attention: windows are causal only")
    }
    if let lengths = mask.keyLengths {
      guard lengths.dtype == .i32, lengths.count == batch else {
        throw fail(op, "key lengths \(lengths): \(batch) i32 values (one per batch row) required")
      }
    }
  }

  /// A soft-capping value: 0 (none) or a positive finite cap.
  public static func softcap(_ op: Op, _ cap: Float) throws {
    guard cap.isFinite, cap >= 0 else {
      throw fail(op, "soft-capping value \(cap): 0 (none) or a positive finite cap required")
    }
  }

  /// Returns (rows, tq, tk) of a causal softmax over x (…, tq, tk).
  public static func causalSoftmax(_ op: Op, _ x: Tensor, _ out: Tensor, _ extra: Tensor?...)
    throws -> (rows: Int, tq: Int, tk: Int)
  {
    try dtype(op, .f32, x, out)
    for case let e? in extra { try dtype(op, .f32, e) }
    guard x.rank >= 2 else { throw fail(op, "\(x): (…, tq, tk) required") }
    let tq = x.shape[x.rank - 2], tk = x.shape[x.rank - 1]
    guard tk >= tq else { throw fail(op, "\(x): tk \(tk) < tq \(tq) leaves rows fully masked") }
    try count(op, x.count, out)
    for case let e? in extra { try count(op, x.count, e) }
    return (x.rowCount, tq, tk)
  }

  /// The geometry of fused attention: q (B, NH, T, HS), k and v (B, KVH, T, HS) with NH a
  /// multiple of KVH, out like q, lse (B·NH·T elements); outputs overlap no input.
  public static func attention(_ op: Op, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor)
    throws -> AttentionShape
  {
    try dtype(op, .f32, q, k, v, out, lse)
    guard q.rank == 4, k.rank == 4, v.rank == 4 else { throw fail(op, "q \(q), k \(k), v \(v): (B, heads, T, HS) required") }
    let (b, nh, t, hs) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
    let kvh = k.shape[1]
    guard k.shape == [b, kvh, t, hs], v.shape == k.shape else {
      throw fail(op, "k \(k) and v \(v) must be (\(b), KVH, \(t), \(hs)) for q \(q)")
    }
    guard kvh > 0, nh % kvh == 0 else { throw fail(op, "\(nh) query heads are not a multiple of \(kvh) kv heads") }
    try count(op, q.count, out)
    try count(op, b * nh * t, lse)
    for o in [out, lse] { try noOverlap(op, output: o, inputs: q, k, v) }
    try noOverlap(op, output: out, inputs: lse)
    return AttentionShape(batch: b, heads: nh, kvHeads: kvh, tokens: t, headDim: hs)
  }

  /// Fused attention's backward: the forward's geometry, dq like q, dk and dv like k, delta
  /// like lse; no output overlaps an input or another output.
  public static func attentionBackward(dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                       delta: Tensor, dq: Tensor, dk: Tensor, dv: Tensor) throws -> AttentionShape {
    let op = Op.attentionBackward
    let g = try attention(op, q: q, k: k, v: v, out: out, lse: lse)
    try dtype(op, .f32, dOut, delta, dq, dk, dv)
    try count(op, q.count, dOut, dq)
    try count(op, k.count, dk, dv)
    try count(op, lse.count, delta)
    let outputs = [delta, dq, dk, dv]
    for (i, o) in outputs.enumerated() {
      try noOverlap(op, output: o, inputs: dOut, q, k, v, out, lse)
      for other in outputs[(i + 1)...] { try noOverlap(op, output: o, inputs: other) }
    }
    return g
  }

  /// dx of the softmax backward may overwrite dOut but not the forward output y.
  public static func causalSoftmaxBackward(_ dOut: Tensor, _ y: Tensor, _ dx: Tensor) throws
    -> (rows: Int, tq: Int, tk: Int)
  {
    let g = try causalSoftmax(.causalSoftmaxBackward, dOut, dx, y)
    try noOverlap(.causalSoftmaxBackward, output: dx, inputs: y)
    return g
  }

  public static func swigluBackward(_ dOut: Tensor, _ gate: Tensor, _ up: Tensor, _ dGate: Tensor,
                                    _ dUp: Tensor) throws {
    try elementwise(.swigluBackward, dOut, gate, up, dGate, dUp)
    try noOverlap(.swigluBackward, output: dGate, inputs: dUp)
    try inPlaceOrDisjoint(.swigluBackward, output: dGate, inputs: dOut, gate, up)
    try inPlaceOrDisjoint(.swigluBackward, output: dUp, inputs: dOut, gate, up)
  }

  public static func swiglu(_ gate: Tensor, _ up: Tensor, _ out: Tensor) throws {
    try elementwise(.swiglu, gate, up, out)
    try inPlaceOrDisjoint(.swiglu, output: out, inputs: gate, up)
  }

  public static func scale(_ x: Tensor, _ out: Tensor) throws {
    try elementwise(.scale, x, out)
    try inPlaceOrDisjoint(.scale, output: out, inputs: x)
  }

  /// Returns (rows, cols) of out = weights[row] · x: x, out (rows, cols) with x's element
  /// count; weights (rows). out may be x itself but must not touch weights.
  public static func scaleRows(_ x: Tensor, _ weights: Tensor, _ out: Tensor) throws
    -> (rows: Int, cols: Int)
  {
    try dtype(.scaleRows, .f32, x, weights, out)
    try count(.scaleRows, x.count, out)
    try count(.scaleRows, x.rowCount, weights)
    try inPlaceOrDisjoint(.scaleRows, output: out, inputs: x)
    try noOverlap(.scaleRows, output: out, inputs: weights)
    return (x.rowCount, x.lastDim)
  }

  /// Returns (rows, tokens per row) of `Backend.preferenceLoss`.
  public static func preferenceLoss(policy: Tensor, reference: Tensor, answerTokens: Tensor, pairsInStep: Tensor,
                                    parameters p: PreferenceLossParameters, tokenWeights: Tensor, lossSum: Tensor,
                                    metrics: Tensor) throws -> (rows: Int, tokens: Int) {
    let op = Op.preferenceLoss
    try dtype(op, .f32, policy, reference, answerTokens, pairsInStep, tokenWeights, lossSum, metrics)
    let rows = policy.count
    guard rows > 0, rows % 2 == 0, rows / 2 <= PreferenceLossParameters.maxPairs else {
      throw fail(op, "\(rows) rows: need chosen/rejected pairs, at most \(PreferenceLossParameters.maxPairs)")
    }
    try count(op, rows, reference, answerTokens)
    try count(op, 1, pairsInStep, lossSum)
    try count(op, PreferenceLossParameters.metricCount, metrics)
    guard tokenWeights.count % rows == 0, tokenWeights.count > 0 else {
      throw fail(op, "\(tokenWeights.count) token weights do not form \(rows) rows")
    }
    guard p.beta > 0, p.beta.isFinite, p.labelSmoothing >= 0, p.labelSmoothing < 0.5, p.rpoAlpha >= 0 else {
      throw fail(op, "beta \(p.beta), label smoothing \(p.labelSmoothing), rpo α \(p.rpoAlpha) out of range")
    }
    let outputs = [tokenWeights, lossSum, metrics]
    for (i, o) in outputs.enumerated() {
      try noOverlap(op, output: o, inputs: policy, reference, answerTokens, pairsInStep)
      for other in outputs[(i + 1)...] where o.overlaps(other) { throw fail(op, "outputs overlap") }
    }
    return (rows, tokenWeights.count / rows)
  }

  /// out[0] += Σx²: x any f32 tensor, out one f32.
  public static func sumOfSquares(_ x: Tensor, _ out: Tensor) throws {
    try dtype(.sumOfSquares, .f32, x, out)
    try count(.sumOfSquares, 1, out)
    try noOverlap(.sumOfSquares, output: out, inputs: x)
  }

  public static func dropoutMask(seed: Tensor, p: Float, mask: Tensor) throws {
    try dtype(.dropoutMask, .i32, seed)
    try dtype(.dropoutMask, .f32, mask)
    try count(.dropoutMask, 2, seed)
    guard p >= 0, p < 1 else { throw fail(.dropoutMask, "p \(p) must lie in [0, 1)") }
    guard mask.count <= Int(UInt32.max) else { throw fail(.dropoutMask, "\(mask.count) elements exceed 2³²") }
    try noOverlap(.dropoutMask, output: mask, inputs: seed)
  }

  public static func elementwise(_ op: Op, _ tensors: Tensor?...) throws {
    guard let first = tensors.first ?? nil else { return }
    for case let t? in tensors {
      try dtype(op, .f32, t)
      try count(op, first.count, t)
    }
  }

  public static func embedding(_ op: Op, _ ids: Tensor, _ table: Tensor, _ rows: Tensor) throws {
    try dtype(op, .i32, ids)
    try dtype(op, .f32, rows)
    // The forward's table may be a frozen one stored f16/bf16; a trained table (the
    // backward's) accumulates in f32.
    if op == .embedding, table.dtype == .f16 || table.dtype == .bf16 {} else { try dtype(op, .f32, table) }
    guard table.rank == 2 else { throw fail(op, "table \(table.shape) must be (vocab, c)") }
    guard rows.rowCount == ids.count, rows.lastDim == table.shape[1] else {
      throw fail(op, "ids \(ids.shape), table \(table.shape), rows \(rows.shape)")
    }
    // embedding writes rows from the table; the backward writes the table from the rows.
    if op == .embedding { try noOverlap(op, output: rows, inputs: table) } else { try noOverlap(op, output: table, inputs: rows) }
  }

  /// Returns (n, vocab).
  /// dLogits may overwrite the logits (one pass reads a row before writing it).
  public static func crossEntropy(_ logits: Tensor, _ targets: Tensor, _ losses: Tensor,
                                  _ dLogits: Tensor?, normalizer: LossNormalizer) throws -> (n: Int, vocab: Int) {
    try dtype(.crossEntropy, .f32, logits, losses, dLogits)
    try dtype(.crossEntropy, .i32, targets)
    let n = logits.rowCount
    try count(.crossEntropy, n, targets, losses)
    try count(.crossEntropy, logits.count, dLogits)
    try noOverlap(.crossEntropy, output: losses, inputs: logits, targets, dLogits)
    if let dLogits { try noOverlap(.crossEntropy, output: dLogits, inputs: targets) }
    switch normalizer {
    case .targetCount: break
    case .value(let v):
      guard v > 0, v.isFinite else {
        throw VKFError.outOfRange(op: "crossEntropy", detail: "normalizer \(v) must be finite and > 0")
      }
    case .tensor(let t):
      try dtype(.crossEntropy, .f32, t)
      guard t.count >= 1 else { throw fail(.crossEntropy, "the normalizer tensor \(t.shape) is empty") }
    }
    return (n, logits.lastDim)
  }

  /// `add`/`mul` broadcasting: b has a's element count, or divides it and repeats.
  public static func broadcast(_ op: Op, _ a: Tensor, _ b: Tensor, _ out: Tensor) throws {
    try dtype(op, .f32, a, b, out)
    try sameCount(op, a, out)
    guard b.count > 0, a.count % b.count == 0 else {
      throw fail(op, "b \(b.shape) does not repeat over a \(a.shape)")
    }
    // In place on a, or on a same-size b, is fine; a broadcast b is read many times.
    try inPlaceOrDisjoint(op, output: out, inputs: a, b.count == a.count ? b : nil)
    if b.count != a.count { try noOverlap(op, output: out, inputs: b) }
  }

  public static func adamW(_ param: Tensor, _ grad: Tensor, _ m: Tensor, _ v: Tensor,
                           _ hyper: Tensor, _ sumSq: Tensor?) throws {
    try dtype(.adamW, .f32, param, grad, m, v, hyper, sumSq)
    try count(.adamW, param.count, grad, m, v)
    try count(.adamW, AdamWHyperParameters.count, hyper)
    try count(.adamW, 1, sumSq)
  }
}
