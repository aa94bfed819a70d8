import VKFCore

/// The keys and values of every layer for `batch` rows of up to `capacity` tokens, plus the
/// scratch buffers of the cached (inference) forward pass, all allocated once.
///
/// Legend: B batch, P capacity (tokens per row), KVH kv heads, HS head size,
/// Tc = `prefillChunk` (the most tokens one pass takes; longer inputs run in chunks).
///
/// Layout: time-major, K and V of layer l are (P, B, KVH·HS). New tokens (B, Tnew, KVH·HS)
/// land in rows [past, past+Tnew) with one permute, and the valid prefix [0, Tk) is one
/// contiguous view that one permute turns head-major (B, KVH, Tk, HS) for the batched
/// attention matmuls. A head-major cache would need B·KVH separate copies and matmuls per
/// layer, because a prefix of its time axis is not contiguous.
public final class KVCache {
  /// Rows decoded together; all rows share one length (no padding).
  public let batch: Int
  /// The most tokens per row (prompt + generated) the cache holds.
  public let capacity: Int
  /// The most new tokens one forward pass processes; longer inputs are split.
  public let prefillChunk: Int
  /// The backend that owns every buffer.
  public let backend: Backend
  /// The architecture the buffers were sized for.
  public let shape: TransformerShape
  /// Tokens per row already in the cache, padding included.
  public internal(set) var length = 0
  /// Left padding per row (`setPadding`): row r's first pad[r] cache slots are hidden from
  /// attention and its positions start after them. Empty: no padding.
  public private(set) var padding: [Int] = []
  /// Per layer: keys (P, B, KVH·HS), roped.
  let keys: [Tensor]
  /// Per layer: values (P, B, KVH·HS).
  let values: [Tensor]
  /// Scratch of one chunk.
  let scratch: InferenceScratch

  /// Whether the keys, values and f32 scratch live in borrowed memory (`init(…, borrowing:)`).
  public let borrowsMemory: Bool

  /// Allocates the cache and scratch for `shape` on `backend`. `borrowing`: a flat f32 tensor
  /// (a training arena's allocation, idle between steps) that holds the keys, values and f32
  /// scratch when it is large enough — then nothing but a few small buffers is allocated, and
  /// the cache must not be used while the owner's data in it is live.
  public init(shape: TransformerShape, backend: Backend, batch: Int, capacity: Int,
              prefillChunk: Int = 128, borrowing: Tensor? = nil) throws {
    guard batch > 0, capacity > 0, prefillChunk > 0 else {
      throw VKFError.shapeMismatch(op: "KVCache",
        detail: "batch \(batch), capacity \(capacity) and prefillChunk \(prefillChunk) must be positive")
    }
    try shape.validate()
    self.batch = batch; self.capacity = capacity; self.backend = backend; self.shape = shape
    self.prefillChunk = min(prefillChunk, capacity)
    let per = DecoderWeights.aligned(capacity * batch * shape.kvWidth)
    let cacheCount = 2 * shape.layers * per
    let scratchCount = InferenceScratch.f32Count(shape: shape, batch: batch, chunk: self.prefillChunk, capacity: capacity,
                                                 alignment: backend.moeRowAlignment)
    let all: Tensor
    if let b = borrowing, b.dtype == .f32, b.count >= cacheCount + scratchCount {
      all = b
      borrowsMemory = true
    } else {
      all = try backend.allocate([cacheCount + scratchCount])
      borrowsMemory = false
    }
    keys = try (0..<shape.layers).map { try all.view(offset: 2 * $0 * per, shape: [capacity, batch, shape.kvWidth]) }
    values = try (0..<shape.layers).map { try all.view(offset: (2 * $0 + 1) * per, shape: [capacity, batch, shape.kvWidth]) }
    scratch = try InferenceScratch(shape: shape, backend: backend, batch: batch, chunk: self.prefillChunk,
                                   capacity: capacity, f32: try all.view(offset: cacheCount, shape: [scratchCount]))
  }

  /// Forgets every cached token and the padding (the buffers are kept).
  public func reset() { length = 0; padding = [] }

  /// Declares a left-padded batch before its first pass: row r's first `pad[r]` tokens are
  /// padding (any valid id), never attended to; its real tokens get positions 0, 1, … as if
  /// unpadded. Empty clears it.
  public func setPadding(_ pad: [Int]) throws {
    guard length == 0 else {
      throw VKFError.other("KVCache.setPadding: the cache already holds \(length) tokens; reset it first")
    }
    guard pad.isEmpty || (pad.count == batch && pad.allSatisfy { $0 >= 0 && $0 < capacity }) else {
      throw VKFError.shapeMismatch(op: "KVCache.setPadding", detail: "\(pad.count) paddings for \(batch) rows, each in [0, \(capacity))")
    }
    if !pad.isEmpty { try backend.upload(pad.map { Int32($0) }, to: scratch.keyStarts) }
    padding = pad
  }

  /// RoPE positions of the next `newTokens` tokens of every row, (B, Tn) row-major.
  func positions(newTokens tn: Int) -> [Int32] {
    (0..<(batch * tn)).map { i in
      Int32(max(0, length + i % tn - (padding.isEmpty ? 0 : padding[i / tn])))
    }
  }

  /// Bytes held on the backend by the cache and its scratch (borrowed memory included).
  public var byteCount: Int { 2 * keys.count * DecoderWeights.aligned(keys.first?.count ?? 0) * 4 + scratch.byteCount }
}

/// Activations of one cached forward pass of at most B·Tc tokens attending over at most P
/// positions, carved from one f32 and one i32 allocation. Each buffer is sized for the
/// largest pass; a pass takes a contiguous leading view of the size it needs.
/// Legend: N = B·Tc, C hidden, F MLP width, NH/KVH heads, HS head size, V vocabulary.
final class InferenceScratch {
  /// Residual stream (N, C), updated in place layer by layer.
  let x: Tensor
  /// RMSNorm output (N, C), a projection output before the residual add (N, C), 1/rms (N,
  /// or N·NH with per-head q/k RMSNorm).
  let h, proj, rstd: Tensor
  /// Queries: projection / head-major (N·NH·HS) and RoPE output / attention output (N·NH·HS).
  let qA, qB: Tensor
  /// Keys and values before and after RoPE (N·KVH·HS).
  let kA, kB: Tensor
  /// Head-major copies of the cached prefix: (B, KVH, P, HS) at most.
  let kHead, vHead: Tensor
  /// Attention scores and probabilities (B·NH, Tc, P) at most.
  let scores, probs: Tensor
  /// MLP gate, up and silu(gate)·up (N, F).
  let gate, up, act: Tensor
  /// Last position of each row (B, C), its RMSNorm (B, C) and 1/rms (B), logits (B, V).
  let last, lastNormed, lastRstd, logits: Tensor
  /// Token ids and RoPE positions (N) i32; the row index of each row's last token (B) i32;
  /// each row's first attended key (B) i32 for a left-padded batch.
  let ids, positions, lastRows, keyStarts: Tensor
  /// Bytes of both allocations.
  let byteCount: Int
  /// A mixture-of-experts model's routing buffers (nil for dense models).
  let moe: InferenceRouting?

  /// The f32 buffers' sizes, in carving order.
  private static func sizes(shape s: TransformerShape, batch: Int, chunk: Int, capacity: Int, alignment: Int) -> [Int] {
    let n = batch * chunk
    // The MLP buffers hold a dense layer's (N, F) and a sparse layer's expert rows (R, F_e).
    let routed = s.moe.map { m in
      MoE.rowCapacity(tokens: n, topK: m.topK, experts: m.experts, alignment: alignment) * m.intermediate
    } ?? 0
    let mlp = max(s.hasDenseMLP ? n * s.intermediate : 0, routed)
    return [n * s.hidden, n * s.hidden, n * s.hidden, s.qkNorm ? n * max(s.heads, s.kvHeads) : n,
            n * s.qWidth, n * s.qWidth, n * s.kvWidth, n * s.kvWidth,
            batch * s.kvWidth * capacity, batch * s.kvWidth * capacity,
            batch * s.heads * chunk * capacity, batch * s.heads * chunk * capacity,
            mlp, mlp, mlp,
            batch * s.hidden, batch * s.hidden, batch, batch * s.vocab]
  }

  /// f32 elements of the scratch's main allocation.
  static func f32Count(shape: TransformerShape, batch: Int, chunk: Int, capacity: Int, alignment: Int) -> Int {
    sizes(shape: shape, batch: batch, chunk: chunk, capacity: capacity, alignment: alignment)
      .reduce(0) { $0 + DecoderWeights.aligned($1) }
  }

  /// `f32`: at least `f32Count` elements to carve the f32 buffers from.
  init(shape s: TransformerShape, backend: Backend, batch: Int, chunk: Int, capacity: Int, f32: Tensor) throws {
    let n = batch * chunk
    let routing = try s.moe.map { try InferenceRouting(shape: s, moe: $0, tokens: n, backend: backend) }
    let sizes = Self.sizes(shape: s, batch: batch, chunk: chunk, capacity: capacity, alignment: backend.moeRowAlignment)
    let offsets = sizes.reduce(into: [0]) { $0.append($0[$0.count - 1] + DecoderWeights.aligned($1)) }
    let total = offsets[offsets.count - 1]
    let t = try (0..<sizes.count).map { try f32.view(offset: offsets[$0], shape: [sizes[$0]]) }
    (x, h, proj, rstd) = (t[0], t[1], t[2], t[3])
    (qA, qB, kA, kB) = (t[4], t[5], t[6], t[7])
    (kHead, vHead, scores, probs) = (t[8], t[9], t[10], t[11])
    (gate, up, act) = (t[12], t[13], t[14])
    (last, lastNormed, lastRstd, logits) = (t[15], t[16], t[17], t[18])
    let a = DecoderWeights.aligned(n)
    let ab = DecoderWeights.aligned(batch)
    let ints = try backend.allocate([2 * a + 2 * ab], .i32)
    ids = try ints.view(offset: 0, shape: [n])
    positions = try ints.view(offset: a, shape: [n])
    lastRows = try ints.view(offset: 2 * a, shape: [batch])
    keyStarts = try ints.view(offset: 2 * a + ab, shape: [batch])
    byteCount = 4 * (total + 2 * a + 2 * ab) + (routing?.byteCount ?? 0)
    moe = routing
  }
}

/// The routing buffers of an inference pass over N tokens through sparse layers.
final class InferenceRouting {
  /// Routing and expert outputs of the layer being run (reused by every layer).
  let routed: RoutedActivations
  /// Gathered inputs (R, C) and router logits (N, E).
  let inputs, logits: Tensor
  /// The shared expert's scratch (Qwen2-MoE), or nil.
  let shared: SharedExpertScratch?
  /// Expert rows R, their alignment, and an expert's width F.
  let rowCount: Int, alignment: Int, width: Int
  /// Bytes of the allocation.
  let byteCount: Int

  init(shape s: TransformerShape, moe m: MoEShape, tokens n: Int, backend: Backend) throws {
    let a = backend.moeRowAlignment
    let r = MoE.rowCapacity(tokens: n, topK: m.topK, experts: m.experts, alignment: a)
    (alignment, rowCount, width) = (a, r, m.intermediate)
    func carve(_ c: Carver) throws -> (RoutedActivations, Tensor, Tensor, SharedExpertScratch?) {
      (try RoutedActivations(c, m, tokens: n, rows: r, hidden: s.hidden), try c.take([r, s.hidden]),
       try c.take([n, m.experts]), m.sharedIntermediate > 0 ? try SharedExpertScratch(c, m, tokens: n, hidden: s.hidden) : nil)
    }
    let measure = Carver(base: nil)
    _ = try carve(measure)
    let storage = try backend.allocate([measure.offset])
    (routed, inputs, logits, shared) = try carve(Carver(base: storage))
    byteCount = 4 * measure.offset
  }
}

extension Tensor {
  /// The first `shape.product` elements of this (flat) buffer, viewed with `shape`.
  func leading(_ shape: [Int]) throws -> Tensor { try view(offset: 0, shape: shape) }
}
