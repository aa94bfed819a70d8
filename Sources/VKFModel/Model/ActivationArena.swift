import VKFCore

/// What one decoder layer keeps from its forward pass for its backward pass.
/// Legend: B batch, T tokens per row, N = B·T, C hidden, NH/KVH query/kv heads, HS head
/// size, F MLP width.
struct LayerActivations {
  /// RMSNorm(x) before attention (N, C) and its 1/rms (N).
  var h1, rstd1: Tensor
  /// Roped queries, head-major (B, NH, T, HS); NH is kv-major (B, KVH, G, T, HS).
  var q: Tensor
  /// Roped keys and the values, head-major (B, KVH, T, HS).
  var k, v: Tensor
  /// Attention probabilities (B, NH, T, T), or with fused attention each row's
  /// log-sum-exp (B, NH, T).
  var probs: Tensor
  /// Attention output, token-major (N, NH·HS): o_proj's input.
  var attn: Tensor
  /// Residual stream after attention (N, C).
  var x1: Tensor
  /// RMSNorm(x1) before the MLP (N, C) and its 1/rms (N).
  var h2, rstd2: Tensor
  /// MLP gate and up projections (N, F), and silu(gate)·up (N, F) — one buffer shared by
  /// every layer: the backward recomputes it from gate and up (as Liger's SwiGLU does), so
  /// no layer keeps its own.
  var gate, up, act: Tensor
  /// With per-head q/k RMSNorm (Qwen3): the projections before it, token-major (N, NH·HS)
  /// and (N, KVH·HS), and its 1/rms per head (N·NH) and (N·KVH); nil otherwise.
  var qRaw: Tensor? = nil, kRaw: Tensor? = nil
  var qRstd: Tensor? = nil, kRstd: Tensor? = nil
  /// With sandwich norms (Gemma 2/3): o_proj's and down_proj's outputs (N, C) before their
  /// RMSNorms, and those norms' 1/rms (N); nil otherwise.
  var oOut: Tensor? = nil, downOut: Tensor? = nil
  var rstd3: Tensor? = nil, rstd4: Tensor? = nil
  /// A mixture-of-experts model's routing and expert outputs (nil for dense models). In a
  /// sparse layer gate, up and act hold the experts' rows (R, F) instead of (N, F).
  var moe: RoutedActivations? = nil
}

/// Every activation, activation gradient and scratch buffer of one (B, T) shape, carved
/// from one f32 allocation (plus one small i32 one for ids and targets), made once and
/// reused across steps (llm.c's single allocation).
///
/// Mixed precision (`activationType` f16 / bf16, every layer saved): each layer's saved
/// tensors (h1, q, k, v, attn, x1, h2, gate, up) are kept 16-bit; a layer runs in one
/// f32 working set and is cast into its 16-bit copy after its forward and back before its
/// backward. The forward itself is f32 throughout (the residual stream is never rounded);
/// only what the backward reads is. 1/rms and the attention row statistics stay f32. Arenas of several shapes share one
/// allocation sized for the largest: only one runs at a time, and nothing in the shared
/// part outlives a forward + backward (ids and targets are uploaded before each pass). What
/// must persist per shape — the RoPE positions — has its own small allocation, and the
/// ones vector is the model's, shared.
final class ActivationArena {
  let batch: Int, tokens: Int
  /// Residual stream before layer l (l < L) and after the last layer (l = L): L+1 × (N, C).
  var residual: [Tensor] = []
  /// Saved activations: one per layer, or a single reused set when layers are recomputed
  /// in the backward pass (checkpointing) or nothing is trained. With 16-bit activations the
  /// per-layer sets hold the 16-bit copies (see `layerSet`).
  var saved: [LayerActivations] = []
  /// True when every layer keeps its activations (training without checkpointing).
  let savesEveryLayer: Bool
  /// The f32 set a layer runs in when the saved sets are 16-bit (nil otherwise).
  private(set) var working: LayerActivations?
  /// Final RMSNorm output (N, C) and 1/rms (N).
  var finalNormed, finalRstd: Tensor
  /// One LM-head chunk's logits (min(N, head chunk), V); overwritten in place by dLogits
  /// when gradients are computed.
  var logits: Tensor
  /// Per-token loss / normalizer (N): Σ is the mean loss.
  var losses: Tensor
  /// (N) ones: bias gradients are row sums, done as ones·dy (a view of the model's ones).
  let ones: Tensor
  /// C ones (a shared expert's row sums), nil without one.
  let onesHidden: Tensor?
  /// Scores before softmax in the forward pass, dP / dScores in the backward (B, NH, T, T);
  /// with fused attention the backward's rowsum(dO ⊙ O) scratch (B, NH, T).
  var scores: Tensor
  /// Scratch of N·NH·HS elements (queries before/after RoPE, attention output, dq).
  var qA, qB, dAttn: Tensor
  /// Scratch of N·KVH·HS elements (keys before/after RoPE, values, dk, dv).
  var kA, kB, dkHead, dvHead: Tensor
  /// Gradient wrt the residual stream (N, C), and two (N, C) temporaries.
  var dResidual, dHidden, dTemp: Tensor
  /// MLP gradients (N, F).
  var dAct, dGate, dUp: Tensor
  /// Token ids and targets (N) i32, in the shared allocation.
  var ids, targets: Tensor
  /// RoPE positions (N) i32: 0..T−1 per row, this arena's own.
  let positions: Tensor
  /// Per-token weights of the logit gradients (N), for sequence-level losses.
  var tokenWeights: Tensor
  /// The allocations every view above points into (f32; i32 ids/targets/positions).
  let storage: Tensor, intStorage: Tensor
  /// A mixture-of-experts model's scratch (nil for dense models).
  let moe: MoEScratch?

  /// `previous`: an arena whose allocations are reused when large enough, so batches of
  /// varying length (padded to their longest example) do not allocate (and page-fault in)
  /// a new arena each step; the allocation only grows. `ones`: at least B·T ones.
  /// `headTokens`: rows of one LM-head chunk.
  /// `activationType` f16 / bf16: saved activations kept 16-bit (only when
  /// `savesEveryLayer`).
  init(shape s: TransformerShape, batch: Int, tokens: Int, savesEveryLayer: Bool, headTokens: Int,
       fusedAttention: Bool, activationType: DType = .f32, previous: ActivationArena? = nil, ones: Tensor,
       backend: Backend) throws {
    let moeAlignment = backend.moeRowAlignment
    self.batch = batch; self.tokens = tokens
    self.savesEveryLayer = savesEveryLayer
    let n = batch * tokens
    // Two passes over the same carving code: the first only measures.
    func carve(_ c: Carver) throws -> Views {
      try Self.carve(c, s, batch: batch, tokens: tokens, savesEveryLayer: savesEveryLayer, headTokens: headTokens,
                     fusedAttention: fusedAttention, activationType: activationType, moeAlignment: moeAlignment)
    }
    let measure = Carver(base: nil)
    _ = try carve(measure)
    let f32Count = measure.offset + DecoderWeights.aligned(n)  // + tokenWeights
    let intCount = 2 * DecoderWeights.aligned(n)
    if let p = previous, p.storage.count >= f32Count, p.intStorage.count >= intCount {
      storage = p.storage; intStorage = p.intStorage
    } else {
      storage = try backend.allocate([f32Count]); intStorage = try backend.allocate([intCount], .i32)
    }
    let arena = try storage.view(offset: 0, shape: [measure.offset])
    let v = try carve(Carver(base: arena))
    residual = v.residual
    saved = v.saved
    working = v.working
    (finalNormed, finalRstd, logits, losses, scores) = (v.f32[0], v.f32[1], v.f32[2], v.f32[3], v.f32[4])
    self.ones = try ones.view(shape: [n])
    // A shared expert's row sums over C: the same ones (the model keeps ≥ max(N, C) of them).
    onesHidden = s.moe?.sharedIntermediate ?? 0 > 0 ? try ones.view(shape: [s.hidden]) : nil
    (qA, qB, dAttn) = (v.f32[5], v.f32[6], v.f32[7])
    (kA, kB, dkHead, dvHead) = (v.f32[8], v.f32[9], v.f32[10], v.f32[11])
    (dResidual, dHidden, dTemp) = (v.f32[12], v.f32[13], v.f32[14])
    (dAct, dGate, dUp) = (v.f32[15], v.f32[16], v.f32[17])
    moe = v.moe
    if let m = moe {
      try backend.fill(m.tokenMask, value: 1)
      try backend.fill(m.auxWeight, value: 1)
    }
    let ints = intStorage
    ids = try ints.view(offset: 0, shape: [n])
    targets = try ints.view(offset: DecoderWeights.aligned(n), shape: [n])
    tokenWeights = try storage.view(offset: measure.offset, shape: [n])
    // Positions 0..T−1 in every row (no packing yet).
    positions = try backend.tensor((0..<n).map { Int32($0 % tokens) }, shape: [n])
  }

  /// The set layer `l` runs in and saves into: its own, the single reused one, or with
  /// 16-bit activations the f32 working set with layer `l`'s f32 parts (1/rms, row
  /// statistics).
  func layerSet(_ l: Int) -> LayerActivations {
    guard var w = working else { return saved[savesEveryLayer ? l : 0] }
    let own = saved[l]
    w.rstd1 = own.rstd1; w.probs = own.probs; w.rstd2 = own.rstd2
    w.qRstd = own.qRstd; w.kRstd = own.kRstd
    w.rstd3 = own.rstd3; w.rstd4 = own.rstd4
    w.moe = own.moe  // routing and expert outputs stay f32, per layer
    return w
  }

  /// The tensors a 16-bit saved set rounds, as (f32 working, 16-bit saved) pairs of layer `l`.
  private func roundedPairs(_ l: Int) -> [(Tensor, Tensor)] {
    guard let w = working else { return [] }
    let h = saved[l]
    var pairs = [(w.h1, h.h1), (w.q, h.q), (w.k, h.k), (w.v, h.v), (w.attn, h.attn), (w.x1, h.x1), (w.h2, h.h2),
                 (w.gate, h.gate), (w.up, h.up)]
    if let wq = w.qRaw, let hq = h.qRaw, let wk = w.kRaw, let hk = h.kRaw { pairs += [(wq, hq), (wk, hk)] }
    if let wo = w.oOut, let ho = h.oOut, let wd = w.downOut, let hd = h.downOut { pairs += [(wo, ho), (wd, hd)] }
    return pairs
  }

  /// After layer `l`'s forward: its working activations into its 16-bit copies (no-op in f32).
  func store(_ l: Int, _ be: Backend) throws {
    for (f, h) in roundedPairs(l) { try be.cast(f, to: h) }
  }

  /// Before layer `l`'s backward: its 16-bit copies widened into the working set (no-op in f32).
  func load(_ l: Int, _ be: Backend) throws {
    for (f, h) in roundedPairs(l) { try be.cast(h, to: f) }
  }

  /// f32 elements an arena of this shape needs (its views plus the token weights).
  static func f32Elements(shape: TransformerShape, batch: Int, tokens: Int, savesEveryLayer: Bool,
                          headTokens: Int, fusedAttention: Bool, activationType: DType = .f32,
                          moeAlignment: Int = 1) throws -> Int {
    let measure = Carver(base: nil)
    _ = try carve(measure, shape, batch: batch, tokens: tokens, savesEveryLayer: savesEveryLayer,
                  headTokens: headTokens, fusedAttention: fusedAttention, activationType: activationType,
                  moeAlignment: moeAlignment)
    return measure.offset + DecoderWeights.aligned(batch * tokens)
  }

  /// Carves every view of an arena for (batch, tokens) from `c`, in a fixed order.
  fileprivate static func carve(_ c: Carver, _ s: TransformerShape, batch: Int, tokens: Int,
                                savesEveryLayer: Bool, headTokens: Int, fusedAttention: Bool,
                                activationType: DType, moeAlignment: Int) throws -> Views {
    let n = batch * tokens
    // The MLP buffers: (N, F) for dense models; with experts, flat and large enough for the
    // dense layers' (N, F) and the sparse layers' expert rows (R, F_e).
    let rows = s.moe.map { MoE.rowCapacity(tokens: n, topK: $0.topK, experts: $0.experts, alignment: moeAlignment) } ?? 0
    let mlp: [Int] = s.moe.map { m in [max(s.hasDenseMLP ? n * s.intermediate : 0, rows * m.intermediate)] }
      ?? [n, s.intermediate]
    // Per-row attention statistics: T probabilities, or one log-sum-exp when fused.
    let attentionRow = fusedAttention ? [batch, s.heads, tokens] : [batch, s.heads, tokens, tokens]
    let half = savesEveryLayer && activationType != .f32
    // The rounded tensors' type: 16-bit in the per-layer sets of a mixed-precision arena.
    func rounded(_ shape: [Int]) throws -> Tensor { half ? try c.take(shape, activationType) : try c.take(shape) }
    var v = Views()
    v.residual = try (0...s.layers).map { _ in try c.take([n, s.hidden]) }
    let act = try c.take(mlp)  // every layer's silu(gate)·up, recomputed in the backward
    v.saved = try (0..<(savesEveryLayer ? s.layers : 1)).map { _ in
      LayerActivations(
        h1: try rounded([n, s.hidden]), rstd1: try c.take([n]),
        q: try rounded([batch, s.heads, tokens, s.headDim]),
        k: try rounded([batch, s.kvHeads, tokens, s.headDim]),
        v: try rounded([batch, s.kvHeads, tokens, s.headDim]),
        probs: try c.take(attentionRow),
        attn: try rounded([n, s.qWidth]), x1: try rounded([n, s.hidden]),
        h2: try rounded([n, s.hidden]), rstd2: try c.take([n]),
        gate: try rounded(mlp), up: try rounded(mlp), act: act,
        qRaw: s.qkNorm ? try rounded([n, s.qWidth]) : nil, kRaw: s.qkNorm ? try rounded([n, s.kvWidth]) : nil,
        qRstd: s.qkNorm ? try c.take([n * s.heads]) : nil, kRstd: s.qkNorm ? try c.take([n * s.kvHeads]) : nil,
        oOut: s.sandwichNorms ? try rounded([n, s.hidden]) : nil,
        downOut: s.sandwichNorms ? try rounded([n, s.hidden]) : nil,
        rstd3: s.sandwichNorms ? try c.take([n]) : nil, rstd4: s.sandwichNorms ? try c.take([n]) : nil,
        moe: try s.moe.map { try RoutedActivations(c, $0, tokens: n, rows: rows, hidden: s.hidden) })
    }
    if half, let first = v.saved.first {
      // The f32 working set: the rounded tensors only (layerSet supplies the rest per layer).
      v.working = LayerActivations(
        h1: try c.take([n, s.hidden]), rstd1: first.rstd1,
        q: try c.take([batch, s.heads, tokens, s.headDim]),
        k: try c.take([batch, s.kvHeads, tokens, s.headDim]),
        v: try c.take([batch, s.kvHeads, tokens, s.headDim]),
        probs: first.probs, attn: try c.take([n, s.qWidth]), x1: try c.take([n, s.hidden]),
        h2: try c.take([n, s.hidden]), rstd2: first.rstd2,
        gate: try c.take(mlp), up: try c.take(mlp), act: act,
        qRaw: s.qkNorm ? try c.take([n, s.qWidth]) : nil, kRaw: s.qkNorm ? try c.take([n, s.kvWidth]) : nil,
        qRstd: first.qRstd, kRstd: first.kRstd,
        oOut: s.sandwichNorms ? try c.take([n, s.hidden]) : nil,
        downOut: s.sandwichNorms ? try c.take([n, s.hidden]) : nil,
        rstd3: first.rstd3, rstd4: first.rstd4)
    }
    v.f32 = try [[n, s.hidden], [n], [min(n, headTokens), s.vocab], [n], attentionRow,
                 [n, s.qWidth], [n, s.qWidth], [n, s.qWidth],
                 [n, s.kvWidth], [n, s.kvWidth], [n, s.kvWidth], [n, s.kvWidth],
                 [n, s.hidden], [n, s.hidden], [n, s.hidden],
                 mlp, mlp, mlp].map { try c.take($0) }
    v.moe = try s.moe.map { try MoEScratch(c, $0, tokens: n, rows: rows, hidden: s.hidden, alignment: moeAlignment) }
    return v
  }

  /// The carved views, before they are unpacked into the arena's properties.
  fileprivate struct Views {
    var residual: [Tensor] = [], saved: [LayerActivations] = [], f32: [Tensor] = []
    var working: LayerActivations?
    var moe: MoEScratch?
  }
}

/// Hands out consecutive 64-element-aligned views of one tensor; with no base it only
/// measures (views of a placeholder storage that is never read or written).
final class Carver {
  let base: Tensor?
  private(set) var offset = 0
  private static let placeholder = PlaceholderStorage()

  init(base: Tensor?) { self.base = base }

  func take(_ shape: [Int]) throws -> Tensor {
    let count = shape.reduce(1, *)
    defer { offset += DecoderWeights.aligned(count) }
    guard let base else {
      return Tensor(storage: Self.placeholder, shape: shape, dtype: .f32, byteOffset: offset * 4)
    }
    return try base.view(offset: offset, shape: shape)
  }

  /// A view of another element type (f16 / bf16: two per f32 slot), 256-byte aligned too.
  func take(_ shape: [Int], _ dtype: DType) throws -> Tensor {
    let count = shape.reduce(1, *)
    let slots = (count * dtype.size + 3) / 4
    defer { offset += DecoderWeights.aligned(slots) }
    guard let base else {
      return Tensor(storage: Self.placeholder, shape: shape, dtype: dtype, byteOffset: offset * 4)
    }
    let slot = try base.view(offset: offset, shape: [slots])
    return Tensor(storage: slot.storage, shape: shape, dtype: dtype, byteOffset: slot.byteOffset)
  }
}

/// Storage that is never touched: the measuring pass's views point into it.
private final class PlaceholderStorage: TensorStorage, @unchecked Sendable {
  var owner: ObjectIdentifier { ObjectIdentifier(self) }
  var byteCount: Int { Int.max / 2 }
  var memory: MemoryKind { .device }
}
