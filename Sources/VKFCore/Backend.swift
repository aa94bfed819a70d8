/// The seam between the model / trainer and the hardware.
///
/// Conventions every implementation follows:
/// - Destination passing: each op writes into tensors the caller allocated; ops never
///   allocate caller-visible memory.
/// - Ops may run asynchronously; `synchronize()` and `download` are the only waits.
/// - Input gradients (`dx`, `dGate`, …) are overwritten; parameter gradients (`dWeight`,
///   `dTable`) and `sumOfSquares` accumulate (`+=`), so gradient accumulation across
///   micro-batches needs no extra op.
/// - Shapes and dtypes are checked in `ShapeCheck` (shared), before any work is queued;
///   bad input throws `VKFError`, never traps.
/// - Rows are the last dimension: a "row-wise" op treats a tensor as (rowCount, lastDim).
public protocol Backend: AnyObject {
  /// Human-readable name, e.g. "cpu (OpenBLAS SKYLAKEX, 2 threads)".
  var name: String { get }
  /// True when `op` is implemented for tensors of `dtype` (the op's main operand).
  func supports(_ op: Op, _ dtype: DType) -> Bool

  // MARK: - Memory
  /// Allocates an uninitialised tensor.
  func allocate(_ shape: [Int], _ dtype: DType, memory: MemoryKind) throws -> Tensor
  /// Copies `bytes` (exactly `t.byteCount`) into `t`, ordered after queued work.
  func upload(_ bytes: UnsafeRawBufferPointer, to t: Tensor) throws
  /// Waits for the queued and running work that uses `t` (later work may still run), then
  /// copies `t` into `bytes` (exactly `t.byteCount`).
  func download(_ t: Tensor, into bytes: UnsafeMutableRawBufferPointer) throws
  /// Waits until every queued op has finished.
  func synchronize() throws
  /// Starts the queued ops without waiting for them (the host can prepare more work, or
  /// read what earlier work produced, while they run). A no-op where ops run at once.
  func flush() throws

  // MARK: - Recorded work
  /// Captures the ops `body` queues as a recording that `replay` runs again, without
  /// recording them anew (GPUs: one command buffer, descriptor sets made once). Nothing
  /// runs now. The body must be self-contained: ops read every per-run value from tensors
  /// (fill them before each replay), it must not upload, download or synchronize, and any
  /// host state it depends on it sets itself — a backend may run it again at every replay
  /// (the CPU does) or only once, here (Vulkan does).
  func record(_ body: @escaping () throws -> Void) throws -> Recording
  /// True when replaying a recording costs less than queueing its ops afresh (GPUs: command
  /// buffers, descriptor sets and barriers made once). The CPU runs a recording's body again
  /// at every replay, so it gains nothing, and callers skip what recording costs (padding
  /// batches to a few fixed shapes).
  var recordingSavesWork: Bool { get }
  /// Queues the recordings' ops, in order, behind the work queued before; like any op this
  /// does not wait. Uploads into tensors a queued recording uses wait for it first.
  func replay(_ recordings: [Recording]) throws

  // MARK: - Costs
  /// What the backend has paid so far (submits, waits, dispatches, barriers, bytes moved,
  /// device memory): compare two snapshots.
  var statistics: ExecutionStatistics { get }
  /// Starts a new device-memory high-water mark at the memory in use now.
  func resetMemoryPeak()
  /// Bytes of device memory a run may use in all: the device-local heaps (Vulkan), the
  /// physical memory (CPU), never more than VKF_DEVICE_MEMORY_LIMIT; nil when unknown.
  var memoryCapacity: Int? { get }
  /// t[i] = value (converted to t's dtype; i32/u8 take the value truncated toward zero).
  func fill(_ t: Tensor, value: Float) throws
  /// dst = src, same dtype and element count.
  func copy(_ src: Tensor, to dst: Tensor) throws
  /// dst = convert(src) between f32, f16 and bf16 (round to nearest even).
  func cast(_ src: Tensor, to dst: Tensor) throws
  /// out = x with its axes reordered (rank ≤ 4, f32): out.shape[i] = x.shape[dims[i]], as
  /// `torch.permute(x, dims).contiguous()`. Attention uses (B, T, NH, HS) ↔ (B, NH, T, HS);
  /// the backward is the permute by the inverse order.
  func permute(_ x: Tensor, dims: [Int], into out: Tensor) throws

  // MARK: - Linear algebra
  /// C = α·op(A)·op(B) + β·C. A (…, m, k) or (…, k, m) when transposed, B (…, k, n) or
  /// (…, n, k), C (…, m, n); a rank-3 operand is a batch, batch 1 or rank 2 broadcasts.
  func matmul(_ a: Tensor, _ b: Tensor, into c: Tensor, transposeA: Bool, transposeB: Bool,
              alpha: Float, beta: Float) throws
  /// out (rows, cols) f32 = dequantised NF4 weight.
  func dequantizeNF4(_ w: NF4Weight, into out: Tensor) throws
  /// y = α·x·op(W) + β·y with W NF4 (n, k): transposeB → y (m, n) = x (m, k)·Wᵀ (forward);
  /// otherwise y (m, k) = x (m, n)·W (input gradient).
  func matmulNF4(_ x: Tensor, _ w: NF4Weight, into y: Tensor, transposeB: Bool,
                 alpha: Float, beta: Float) throws
  /// out (rows, cols) = `kind`'s quantise-dequantise of w (rows, cols), f32 (QAT).
  func fakeQuantize(_ w: Tensor, kind: FakeQuant, into out: Tensor) throws
  /// out (rows, cols) f32 = dequantised int8 weight, (q − zp)·scale.
  func dequantizeInt8(_ w: Int8Weight, into out: Tensor) throws
  /// y = α·x·op(W) + β·y with W int8 (n, k), as `matmulNF4`.
  func matmulInt8(_ x: Tensor, _ w: Int8Weight, into y: Tensor, transposeB: Bool,
                  alpha: Float, beta: Float) throws
  /// y = base(x) + scale·(loraX·Aᵀ)·Bᵀ, keeping xa = loraX·Aᵀ for the backward pass.
  /// x, loraX (m, in); A (r, in); B (out, r); y (m, out); xa (m, r). `loraX` is x after
  /// dropout (nil: x itself).
  func loraForward(_ x: Tensor, loraX: Tensor?, base: LinearWeight, a: Tensor, b: Tensor,
                   scale: Float, into y: Tensor, xa: Tensor) throws

  // MARK: - Transformer blocks
  /// out = x / sqrt(mean(x²) + eps) · (weight + weightOffset), row-wise; rstd (rows) keeps
  /// 1/sqrt(…). `weightOffset` 1 is Gemma's RMSNorm (the stored weight is the offset from 1).
  func rmsNorm(_ x: Tensor, weight: Tensor, weightOffset: Float, eps: Float, into out: Tensor,
               rstd: Tensor) throws
  /// dx (overwritten) and dWeight (accumulated, optional) from dOut; dWeight is the same
  /// whatever the offset.
  func rmsNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, weightOffset: Float, rstd: Tensor,
                       dx: Tensor, dWeight: Tensor?) throws
  /// out = (x − mean) / sqrt(var + eps) · weight + bias, row-wise, with the biased variance
  /// (torch.nn.LayerNorm, BERT's); mean and rstd (rows) keep the row statistics.
  func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, into out: Tensor, mean: Tensor,
                 rstd: Tensor) throws
  /// dx (overwritten); dWeight += Σ_rows dOut ⊙ x̂ and dBias += Σ_rows dOut (each optional),
  /// x̂ = (x − mean)·rstd.
  func layerNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, dx: Tensor,
                         dWeight: Tensor?, dBias: Tensor?) throws
  /// Rotary embedding, Hugging Face rotate-half layout. x, out (tokens, heads, headDim);
  /// positions (tokens) i32; invFreq (headDim/2) f32 from `RoPE.inverseFrequencies`.
  func rope(_ x: Tensor, positions: Tensor, invFreq: Tensor, into out: Tensor) throws
  /// dx = rotation by −angle of dOut (the rotation is orthogonal).
  func ropeBackward(_ dOut: Tensor, positions: Tensor, invFreq: Tensor, into dx: Tensor) throws
  /// out = softmax(scale·x) over the last dim with a causal mask: x (…, tq, tk), tk ≥ tq,
  /// row i (position p = i + (tk − tq)) sees keys j ≤ p, and with `window` > 0 only
  /// j > p − window (a sliding window: transformers' `kv_idx > q_idx − sliding_window`).
  /// Masked entries are 0. `keyStarts` (i32, one entry per sequence, or nil) masks a
  /// left-padded batch: the (rows / tq) score matrices split into keyStarts.count equal
  /// groups (sequences), and group g also hides keys j < keyStarts[g]; a row left with no
  /// visible key (a padding query) is all 0.
  func causalSoftmax(_ x: Tensor, scale: Float, window: Int, keyStarts: Tensor?, into out: Tensor) throws
  /// dx = scale · y ⊙ (dy − Σ dy⊙y), from the forward output y.
  func causalSoftmaxBackward(_ dOut: Tensor, out y: Tensor, scale: Float, into dx: Tensor) throws
  /// Causal attention without the T×T matrix (flash-attention style, online softmax over key
  /// blocks): q (B, NH, T, HS) head-major, k and v (B, KVH, T, HS) with NH a multiple of KVH
  /// (query head h reads kv head h / (NH / KVH), repeat_kv's order). out (B, NH, T, HS) =
  /// softmax(scale·q·kᵀ, key j ≤ query i, and i − j < window when `window` > 0)·v;
  /// lse (B, NH, T) = log Σ_visible exp(scale·q·kᵀ), kept for the backward.
  /// `softcap` > 0 caps every score first: s → softcap·tanh(s / softcap) (Gemma 2's
  /// `attn_logit_softcapping`, applied after the scale and before the mask as transformers
  /// does); 0 leaves the scores alone.
  /// `mask` says which keys each query sees (causal or not, window, right padding) and
  /// shapes the scores (soft-capping); see `AttentionMask`.
  func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, mask: AttentionMask, into out: Tensor,
                 lse: Tensor) throws
  /// dq (B, NH, T, HS), dk and dv (B, KVH, T, HS), overwritten, from dOut and the forward's
  /// out and lse; the probabilities are recomputed block by block. `delta` (B, NH, T) is
  /// scratch (rowsum(dOut ⊙ out)). With `softcap` the score gradients go through the cap:
  /// d/ds softcap·tanh(s / softcap) = 1 − (capped / softcap)².
  func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                         scale: Float, mask: AttentionMask, delta: Tensor, dq: Tensor, dk: Tensor,
                         dv: Tensor) throws
  /// out = act(gate) ⊙ up: SwiGLU (silu) or GeGLU (tanh-approximated GELU, Gemma's).
  func gatedActivation(_ kind: GatedActivation, gate: Tensor, up: Tensor, into out: Tensor) throws
  /// dGate, dUp (overwritten) from dOut.
  func gatedActivationBackward(_ kind: GatedActivation, _ dOut: Tensor, gate: Tensor, up: Tensor,
                               dGate: Tensor, dUp: Tensor) throws
  /// out = act(x) elementwise: an ungated MLP's activation (BERT's exact GELU). out may be x.
  func activation(_ kind: Activation, _ x: Tensor, into out: Tensor) throws
  /// dx = dOut ⊙ act'(x) (dx may be dOut).
  func activationBackward(_ kind: Activation, _ dOut: Tensor, x: Tensor, into dx: Tensor) throws
  /// out (n, c) = table[ids] with ids (n) i32 and table (vocab, c).
  func embedding(ids: Tensor, table: Tensor, into out: Tensor) throws
  /// dTable[ids[i]] += dOut[i] (deterministic: no float atomics).
  func embeddingBackward(ids: Tensor, dOut: Tensor, dTable: Tensor) throws
  /// Fused cross-entropy over logits (n, vocab) and targets (n) i32. losses (n) f32 gets
  /// −log softmax(logits)[target] / normalizer (0 for ignored rows), so Σ losses is the mean
  /// loss; dLogits (optional, n × vocab) gets (softmax − onehot) / normalizer.
  /// `softcap` > 0: the loss is over capped logits softcap·tanh(x / softcap) (Gemma 2's
  /// `final_logit_softcapping`) and dLogits is the gradient w.r.t. the uncapped x.
  func crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: Int32, normalizer: LossNormalizer,
                    softcap: Float, losses: Tensor, dLogits: Tensor?) throws
  /// A DPO-family loss (`PreferenceLossMath.batch`) of rows/2 pairs, rows 2i chosen and
  /// 2i+1 rejected: policy, reference (rows) summed answer log-probs; answerTokens (rows)
  /// answer lengths as f32; pairsInStep (1) the step's pair count, the loss's divisor.
  /// Writes tokenWeights (rows, T): each row's −dL/dπ on every token; adds the micro-batch's
  /// share of L into lossSum[0] and the metric sums into metrics (`metricCount`).
  func preferenceLoss(policy: Tensor, reference: Tensor, answerTokens: Tensor, pairsInStep: Tensor,
                      parameters: PreferenceLossParameters, tokenWeights: Tensor, lossSum: Tensor,
                      metrics: Tensor) throws

  // MARK: - Mixture of experts
  // Legend: N tokens, E experts, K experts per token, R = `MoE.rowCapacity` expert rows.
  // A token's K (token, slot) pairs run as rows grouped by expert: segment e is rows
  // offsets[e] ..< offsets[e + 1], its pairs in token order, then zero rows up to the next
  // multiple of `moeRowAlignment` (with the matmul tile's height, no tile of rows would span
  // two experts; both backends use 1: see VulkanBackend.moeRowAlignment).
  /// Rows each expert's segment is padded to a multiple of (1: unpadded).
  var moeRowAlignment: Int { get }
  /// The router: probs (N, E) = softmax(logits (N, E)) row-wise; experts (N, K) i32 the K most
  /// probable, most probable first (ties: lower index), and weights (N, K) their probabilities,
  /// divided by their sum when `normalize` (Mixtral, `norm_topk_prob`).
  func moeRoute(logits: Tensor, topK: Int, normalize: Bool, probs: Tensor, weights: Tensor,
                experts: Tensor) throws
  /// Groups the pairs by expert: offsets (E + 1) i32 as above, slots (N, K) i32 the row of pair
  /// (n, k), sources (R) i32 the pair n·K + k each row holds, −1 for padding rows and the rows
  /// after offsets[E].
  func moeDispatch(experts: Tensor, expertCount: Int, alignment: Int, offsets: Tensor, slots: Tensor,
                   sources: Tensor) throws
  /// rows (R, C)[r] = weights[s] · x[s / K] for s = sources[r] (no weights: x[s / K]), 0 where
  /// s < 0. x (N, C); weights (N, K).
  func moeGather(_ x: Tensor, sources: Tensor, topK: Int, weights: Tensor?, into rows: Tensor) throws
  /// out (N, C)[n] = Σ_k weights[n, k] · rows[slots[n, k]] (no weights: the plain sum), plus
  /// out's previous value when `accumulate`.
  func moeCombine(_ rows: Tensor, slots: Tensor, weights: Tensor?, into out: Tensor, accumulate: Bool) throws
  /// dWeights (N, K)[n, k] = dOut[n] · rows[slots[n, k]]: the combine's weight gradient.
  func moeCombineBackward(_ dOut: Tensor, rows: Tensor, slots: Tensor, dWeights: Tensor) throws
  /// Per expert segment of rows, with b holding one matrix per expert:
  /// - not transposeA: c (R, n)[seg e] = a (R, k)[seg e] · op(b[e]) + β·c, b (E, n, k) with
  ///   transposeB (x·Wᵀ) or (E, k, n) without; rows after offsets[E] are left alone. b may be
  ///   f16 / bf16 (frozen experts under mixed precision), accumulated in f32.
  /// - transposeA: c (E, m, n)[e] = a (R, m)[seg e]ᵀ · b (R, n)[seg e] + β·c[e] (weight
  ///   gradients; transposeB must be false).
  func groupedMatmul(_ a: Tensor, _ b: Tensor, into c: Tensor, offsets: Tensor, transposeA: Bool,
                     transposeB: Bool, beta: Float) throws
  /// `groupedMatmul` (not transposeA) with frozen NF4 experts: w stacks the E experts' matrices
  /// as (E·r, cols), expert e's rows e·r ..< (e + 1)·r (the blocks of the stacked row-major
  /// tensor, as one NF4 weight quantises them). transposeB: c (R, r)[seg e] = a (R, cols)·W_eᵀ;
  /// otherwise c (R, cols)[seg e] = a (R, r)·W_e. Plus β·c.
  func groupedMatmulNF4(_ a: Tensor, _ w: NF4Weight, experts: Int, into c: Tensor, offsets: Tensor,
                        transposeB: Bool, beta: Float) throws
  /// stats (2·E + 1) += [pairs routed to each expert; Σ probs per expert; tokens], each token
  /// weighted by its tokenMask (N) f32 value (1 real, 0 padding: skipped; nil: all 1): the
  /// load-balancing loss's sums for one layer.
  func moeRouterStatistics(probs: Tensor, experts: Tensor, tokenMask: Tensor?, into stats: Tensor) throws
  /// The load-balancing loss of `stats` summed over the layers (transformers'
  /// `load_balancing_loss_func`): with M = stats[2E], f_e = count_e / M and P_e = Σprob_e / M,
  /// lossSum[0] += c·E·Σ_e f_e·P_e and gradient (E) = c·E·f_e / M (its gradient with respect
  /// to each counted token's probability of e), where c = coefficient · weight[0] (weight nil: 1).
  func moeAuxLoss(stats: Tensor, coefficient: Float, weight: Tensor?, lossSum: Tensor, gradient: Tensor) throws
  /// dLogits (N, E) through the router: from dWeights (N, K), through the top-K (and its
  /// normalisation), plus auxGradient[e]·tokenMask[n] on each probability, then the softmax.
  func moeRouteBackward(dWeights: Tensor, probs: Tensor, weights: Tensor, experts: Tensor, normalize: Bool,
                        auxGradient: Tensor?, tokenMask: Tensor?, into dLogits: Tensor) throws

  // MARK: - Elementwise and reductions
  /// out = a + α·b; b is a's shape or repeats over a's rows (b.count divides a.count).
  func add(_ a: Tensor, _ b: Tensor, alpha: Float, into out: Tensor) throws
  /// out = a ⊙ b, with `add`'s broadcasting.
  func mul(_ a: Tensor, _ b: Tensor, into out: Tensor) throws
  /// out = α·x, or with `softcap` > 0 softcap·tanh(α·x / softcap) (Gemma 2's soft-capped
  /// scores and logits where no fused op caps them).
  func scale(_ x: Tensor, by alpha: Float, softcap: Float, into out: Tensor) throws
  /// out[r, c] = weights[r] · x[r, c]: x, out (rows, cols) f32 with rows = x.rowCount;
  /// weights (rows) f32. out may be x itself (in place); DPO scales the cross-entropy logit
  /// gradients (N, V) per token this way.
  func scaleRows(_ x: Tensor, weights: Tensor, into out: Tensor) throws
  /// out[0] += Σ x² (out: one f32), for global gradient-norm clipping.
  func sumOfSquares(_ x: Tensor, into out: Tensor) throws
  /// mask[i] = 0 with probability p, else 1/(1 − p): `DropoutMask`'s draw for the 64-bit seed
  /// in `seed` (2 i32 words, low first, read when the op runs), `stream` and element i.
  /// mask f32, any shape; p ∈ [0, 1).
  func dropoutMask(seed: Tensor, stream: UInt32, p: Float, into mask: Tensor) throws

  // MARK: - Generation
  /// ids[r] = the next token of row r drawn from logits (R, V) by `SamplingParameters` (see
  /// there). presence (R, V) i32 or nil: nonzero marks a token row r has seen (the repetition
  /// penalty applies to those); the op then marks the drawn token too. ids (R) i32.
  /// entropy (R) f32 or nil: each row's entropy of softmax(logits / T) (T the temperature, 1
  /// when greedy; no penalty, no filter), TRL's logged `entropy` of a sampled token.
  func sampleTokens(logits: Tensor, presence: Tensor?, parameters: SamplingParameters, into ids: Tensor,
                    entropy: Tensor?) throws

  // MARK: - Optimizer
  /// One AdamW step (PyTorch semantics) on param with grad, moments m and v (all f32, same
  /// count). hyper: `AdamWHyperParameters.count` f32 (see there); gradSumOfSquares: one f32
  /// from `sumOfSquares`, used for clipping when hyper's maxGradNorm > 0; when it is given and
  /// not finite the step is skipped (param, m, v unchanged), so a NaN/inf found after a
  /// recorded step leaves the previous parameters.
  func adamW(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hyper: Tensor,
             gradSumOfSquares: Tensor?) throws
}

/// What divides a summed loss (`Backend.crossEntropy`).
public enum LossNormalizer {
  /// The number of targets ≠ ignoreIndex: the mean over the batch (0 when there are none).
  case targetCount
  /// A fixed value, finite and > 0.
  case value(Float)
  /// The first f32 of a tensor (> 0), read when the op runs: a recorded step reads each
  /// replay's value from it.
  case tensor(Tensor)

  /// `value` for a number, `targetCount` for nil.
  public init(_ value: Float?) { self = value.map { .value($0) } ?? .targetCount }
}

/// Ops captured by `Backend.record`; only the backend that made it can replay it.
public protocol Recording: AnyObject {}

/// A recording that is the body itself: backends that run ops as they are called (the CPU)
/// replay by calling it again.
public final class ClosureRecording: Recording {
  /// The backend that made it.
  public let owner: ObjectIdentifier
  /// The recorded body.
  public let body: () throws -> Void

  public init(owner: ObjectIdentifier, body: @escaping () throws -> Void) {
    self.owner = owner
    self.body = body
  }
}

// MARK: - Composite defaults
// A backend overrides these with fused kernels; each is a protocol requirement too, so a call
// through `any Backend` reaches the override.
extension Backend {
  public func loraForward(_ x: Tensor, loraX: Tensor?, base: LinearWeight, a: Tensor, b: Tensor,
                          scale: Float, into y: Tensor, xa: Tensor) throws {
    try ShapeCheck.loraForward(x, loraX: loraX, base: base, a: a, b: b, y: y, xa: xa)
    try linear(x, base, into: y, beta: 0)
    try matmul(loraX ?? x, a, into: xa, transposeA: false, transposeB: true, alpha: 1, beta: 0)
    try matmul(xa, b, into: y, transposeA: false, transposeB: true, alpha: scale, beta: 1)
  }

  /// y = x·Wᵀ + β·y for a dense, NF4 or int8 weight W (out, in).
  public func linear(_ x: Tensor, _ w: LinearWeight, into y: Tensor, beta: Float = 0) throws {
    switch w {
    case .dense(let t):
      try matmul(x, t, into: y, transposeA: false, transposeB: true, alpha: 1, beta: beta)
    case .nf4(let q):
      try matmulNF4(x, q, into: y, transposeB: true, alpha: 1, beta: beta)
    case .int8(let q):
      try matmulInt8(x, q, into: y, transposeB: true, alpha: 1, beta: beta)
    }
  }
}

// MARK: - Gated MLP activations

/// The activation of a gated MLP's gate: down(act(gate(x)) ⊙ up(x)).
public enum GatedActivation: String, Sendable, Equatable {
  /// silu(g) = g·σ(g): SwiGLU (Llama, Mistral, Qwen).
  case silu
  /// gelu_pytorch_tanh(g) = ½·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))): GeGLU (Gemma).
  case geluTanh
}

/// Which keys each query of fused attention sees, and how its scores are shaped.
public struct AttentionMask: Sendable {
  /// Query i sees keys j ≤ i (decoders); false: every key (encoders such as BERT).
  public var causal: Bool
  /// Causal only: keys i − window < j ≤ i as well (Mistral, Gemma); 0 = none.
  public var window: Int
  /// Scores s become softcap·tanh(s / softcap) after the scale (Gemma 2); 0 = none.
  public var softcap: Float
  /// Per batch row, how many keys are real, the rest being right padding: (B) i32 on the
  /// backend, each in [1, T]; nil: all T. A query with no visible key gets a zero output.
  public var keyLengths: Tensor?

  public init(causal: Bool = true, window: Int = 0, softcap: Float = 0, keyLengths: Tensor? = nil) {
    self.causal = causal; self.window = window; self.softcap = softcap; self.keyLengths = keyLengths
  }
}

/// The activation of an ungated MLP: down(act(up(x))).
public enum Activation: String, Sendable, Equatable {
  /// gelu(x) = x·Φ(x) = ½·x·(1 + erf(x/√2)): BERT's "gelu" (torch's exact GELU).
  case gelu
  /// gelu_new / gelu_pytorch_tanh: ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
  case geluTanh
  /// σ(x) = 1 / (1 + e^−x): a shared expert's gate (Qwen2-MoE's shared_expert_gate).
  case sigmoid
}

// MARK: - Conveniences
extension Backend {
  /// `rmsNorm` with the weight as stored (no offset).
  public func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float, into out: Tensor, rstd: Tensor) throws {
    try rmsNorm(x, weight: weight, weightOffset: 0, eps: eps, into: out, rstd: rstd)
  }

  /// `rmsNormBackward` with the weight as stored (no offset).
  public func rmsNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, rstd: Tensor,
                              dx: Tensor, dWeight: Tensor?) throws {
    try rmsNormBackward(dOut, x: x, weight: weight, weightOffset: 0, rstd: rstd, dx: dx, dWeight: dWeight)
  }

  /// out = silu(gate) ⊙ up.
  public func swiglu(gate: Tensor, up: Tensor, into out: Tensor) throws {
    try gatedActivation(.silu, gate: gate, up: up, into: out)
  }

  /// SwiGLU's dGate, dUp (overwritten) from dOut.
  public func swigluBackward(_ dOut: Tensor, gate: Tensor, up: Tensor, dGate: Tensor, dUp: Tensor) throws {
    try gatedActivationBackward(.silu, dOut, gate: gate, up: up, dGate: dGate, dUp: dUp)
  }

  /// `causalSoftmax` without a sliding window.
  public func causalSoftmax(_ x: Tensor, scale: Float, into out: Tensor) throws {
    try causalSoftmax(x, scale: scale, window: 0, keyStarts: nil, into: out)
  }

  /// `sampleTokens` without entropies.
  public func sampleTokens(logits: Tensor, presence: Tensor?, parameters: SamplingParameters, into ids: Tensor) throws {
    try sampleTokens(logits: logits, presence: presence, parameters: parameters, into: ids, entropy: nil)
  }

  /// `causalSoftmax` without key starts (every sequence starts at key 0).
  public func causalSoftmax(_ x: Tensor, scale: Float, window: Int, into out: Tensor) throws {
    try causalSoftmax(x, scale: scale, window: window, keyStarts: nil, into: out)
  }

  /// Causal `attention` without a sliding window or soft-capping.
  public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, into out: Tensor, lse: Tensor) throws {
    try attention(q: q, k: k, v: v, scale: scale, mask: AttentionMask(), into: out, lse: lse)
  }

  /// Causal `attention` with a window (0: none) and soft-capping (0: none).
  public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, window: Int, softcap: Float = 0,
                        into out: Tensor, lse: Tensor) throws {
    try attention(q: q, k: k, v: v, scale: scale, mask: AttentionMask(window: window, softcap: softcap),
                  into: out, lse: lse)
  }

  /// Causal `attentionBackward` without a sliding window or soft-capping.
  public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                scale: Float, delta: Tensor, dq: Tensor, dk: Tensor, dv: Tensor) throws {
    try attentionBackward(dOut, q: q, k: k, v: v, out: out, lse: lse, scale: scale, mask: AttentionMask(),
                          delta: delta, dq: dq, dk: dk, dv: dv)
  }

  /// Causal `attentionBackward` with a window (0: none) and soft-capping (0: none).
  public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                scale: Float, window: Int, softcap: Float = 0, delta: Tensor, dq: Tensor, dk: Tensor,
                                dv: Tensor) throws {
    try attentionBackward(dOut, q: q, k: k, v: v, out: out, lse: lse, scale: scale,
                          mask: AttentionMask(window: window, softcap: softcap), delta: delta, dq: dq, dk: dk, dv: dv)
  }

  /// `crossEntropy` over uncapped logits.
  public func crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: Int32, normalizer: LossNormalizer,
                           losses: Tensor, dLogits: Tensor?) throws {
    try crossEntropy(logits: logits, targets: targets, ignoreIndex: ignoreIndex, normalizer: normalizer,
                     softcap: 0, losses: losses, dLogits: dLogits)
  }

  /// out = α·x.
  public func scale(_ x: Tensor, by alpha: Float, into out: Tensor) throws {
    try scale(x, by: alpha, softcap: 0, into: out)
  }

  /// Allocates device memory.
  public func allocate(_ shape: [Int], _ dtype: DType = .f32) throws -> Tensor {
    try allocate(shape, dtype, memory: .device)
  }

  /// Allocates a tensor holding `values` (f32 or i32 arrays, or u8 bytes).
  public func tensor<T>(_ values: [T], shape: [Int], _ dtype: DType,
                        memory: MemoryKind = .device) throws -> Tensor {
    guard MemoryLayout<T>.stride == dtype.size, values.count == shape.reduce(1, *) else {
      throw VKFError.shapeMismatch(op: "tensor",
        detail: "\(values.count) values of \(T.self) for \(dtype) \(shape)")
    }
    let t = try allocate(shape, dtype, memory: memory)
    try values.withUnsafeBytes { try upload($0, to: t) }
    return t
  }

  /// An f32 tensor from `values`.
  public func tensor(_ values: [Float], shape: [Int]) throws -> Tensor {
    try tensor(values, shape: shape, .f32)
  }

  /// An i32 tensor from `values`.
  public func tensor(_ values: [Int32], shape: [Int]) throws -> Tensor {
    try tensor(values, shape: shape, .i32)
  }

  /// Uploads f32/i32/u8 values into an existing tensor of the same byte size.
  public func upload<T>(_ values: [T], to t: Tensor) throws {
    guard values.count * MemoryLayout<T>.stride == t.byteCount else {
      throw VKFError.shapeMismatch(op: "upload",
        detail: "\(values.count) values of \(T.self) into \(t)")
    }
    try values.withUnsafeBytes { try upload($0, to: t) }
  }

  /// Downloads a tensor's elements as `T` (Float for f32, Int32 for i32, UInt8 for u8,
  /// UInt16 for f16/bf16 bit patterns).
  public func download<T>(_ t: Tensor, as: T.Type) throws -> [T] {
    guard t.byteCount % MemoryLayout<T>.stride == 0 else {
      throw VKFError.dtypeMismatch(op: "download", detail: "\(t) as \(T.self)")
    }
    var out = [T](unsafeUninitializedCapacity: t.byteCount / MemoryLayout<T>.stride) { _, n in
      n = t.byteCount / MemoryLayout<T>.stride
    }
    try out.withUnsafeMutableBytes { try download(t, into: $0) }
    return out
  }

  /// Downloads an f32 tensor, or any float tensor converted to f32.
  public func floats(_ t: Tensor) throws -> [Float] {
    switch t.dtype {
    case .f32: return try download(t, as: Float.self)
    case .f16: return try download(t, as: UInt16.self).map { Float(Float16(bitPattern: $0)) }
    case .bf16: return try download(t, as: UInt16.self).map { BFloat16.toFloat($0) }
    case .i32: return try download(t, as: Int32.self).map { Float($0) }
    case .u8: return try download(t, as: UInt8.self).map { Float($0) }
    }
  }

  /// `crossEntropy` with a fixed normalizer, or (nil) the number of targets ≠ ignoreIndex.
  public func crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: Int32, normalizer: Float?,
                           losses: Tensor, dLogits: Tensor?) throws {
    try crossEntropy(logits: logits, targets: targets, ignoreIndex: ignoreIndex,
                     normalizer: LossNormalizer(normalizer), losses: losses, dLogits: dLogits)
  }

  /// out = a + b.
  public func add(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
    try add(a, b, alpha: 1, into: out)
  }

  /// c = op(A)·op(B) (α = 1, β = 0).
  public func matmul(_ a: Tensor, _ b: Tensor, into c: Tensor, transposeA: Bool = false,
                     transposeB: Bool = false) throws {
    try matmul(a, b, into: c, transposeA: transposeA, transposeB: transposeB, alpha: 1, beta: 0)
  }

  /// True when this backend allocated `t`.
  public func owns(_ t: Tensor) -> Bool { t.storage.owner == ObjectIdentifier(self) }

  /// Throws `wrongBackend` unless every tensor was allocated by this backend.
  public func checkOwnership(_ op: Op, _ tensors: Tensor?...) throws {
    try checkOwnership(op, tensors)
  }

  /// `checkOwnership` over an array (e.g. an NF4 weight's `tensors`).
  public func checkOwnership(_ op: Op, _ tensors: [Tensor?]) throws {
    for case let t? in tensors where !owns(t) {
      throw VKFError.wrongBackend(op: op.rawValue, detail: "\(t) is not owned by \(name)")
    }
  }
}
