import VKFCore

/// A decoder-only causal LM — every `Architecture` in the registry (Llama, Mistral, Qwen2/3,
/// Gemma 1–3, Phi-3, Mixtral, Qwen3-MoE, SmolLM, …) — with an explicit forward and backward
/// pass over `Backend` ops: embedding → layers → RMSNorm → LM head → fused cross-entropy.
/// Matches transformers' `<Architecture>ForCausalLM` classes in f32.
///
/// Use: `forward(ids:targets:batch:computeGradients: true)`, then `backward()`; parameter
/// gradients accumulate across calls until `weights.zeroGradients()`. Activations live in one
/// arena per (B, T), made on first use and reused while the shape stays the same.
///
/// With targets, the LM head and the loss run `headChunkTokens` rows at a time (the
/// `LanguageModelHead` component; Liger's fused linear cross-entropy, over rows): a chunk's
/// logits, its losses and — when gradients are computed — at once dL/dhidden and the head's
/// gradients, so no pass holds N × V logits. A reward model runs the trunk alone
/// (`forwardHidden`) under the `ScoreHead` component.
/// Legend: B batch, T tokens per row, N = B·T, C hidden, V vocabulary.
public final class DecoderModel {
  /// Parameters and gradients.
  public let weights: DecoderWeights
  /// The architecture.
  public var shape: TransformerShape { weights.shape }
  /// The backend every op runs on.
  public var backend: Backend { weights.backend }
  /// Keep only each layer's input and recompute the layer in the backward pass.
  public let checkpointing: Bool
  /// Storage of the saved activations when every layer keeps them (mixed precision: f16 /
  /// bf16 copies of each layer's matmul inputs and outputs; see `ActivationArena`).
  public let activationType: DType
  /// Attention through the fused op (`Backend.attention`: no T×T buffers, the default), or
  /// through scores, causal softmax and probabilities (B, NH, T, T) per layer — the
  /// reference path, kept for tests.
  public let fusedAttention: Bool
  /// RoPE inverse frequencies (HS/2), shared by the training and the cached forward.
  let invFreq: Tensor
  /// RoPE inverse frequencies of the sliding-window layers when they have their own (Gemma 3's
  /// local base), else nil.
  let localInvFreq: Tensor?
  /// The arena of the last pass.
  private var arena: ActivationArena?
  /// Every shape's arena met so far; all share the largest one's allocation.
  private var arenas: [ArenaShape: ActivationArena] = [:]
  /// At least as many ones as the largest arena's N (views of it are the arenas' `ones`).
  private var ones: Tensor?
  /// A (B, T) arena key.
  private struct ArenaShape: Hashable { let batch: Int, tokens: Int }
  /// What the pending backward still has to do with the LM head.
  private enum PendingBackward {
    case none
    /// The head's gradients are done (in the forward pass); only the trunk remains.
    case trunk
    /// Per-token weights come with `backward(tokenWeights:)`; the forward computed unweighted
    /// dL/dhidden (frozen head) or nothing (trained head: recomputed chunk by chunk).
    case weighted
  }
  /// Set by a forward with gradients, cleared by its backward.
  private var pending = PendingBackward.none
  /// The normalizer of the last pass with targets (a weighted backward recomputes with it).
  private var headNormalizer = LossNormalizer.value(1)
  /// Rows of the LM head (and its logits buffer) per chunk of a pass with targets.
  public let headChunkTokens: Int
  /// Logits of the last forward without targets (N, V), grow-only; outside the arenas.
  private var fullLogits: Tensor?
  /// The last forward without targets' logits, a view of `fullLogits`.
  private var lastLogits: Tensor?
  /// True between a `forwardHidden` with gradients and `backwardFromHidden`.
  private var hiddenBackwardPending = false

  /// A model over `weights`; with `checkpointing`, activations of one layer at a time.
  /// `headChunkTokens`: rows per LM-head chunk (default `defaultHeadChunkTokens(vocab:)`;
  /// tests pass small odd values to exercise the chunk edges).
  /// `activationType` f16 / bf16 keeps the saved activations 16-bit (mixed precision).
  public init(weights: DecoderWeights, checkpointing: Bool = false, headChunkTokens: Int? = nil,
              fusedAttention: Bool = true, activationType: DType = .f32) throws {
    guard activationType.isFloat else {
      throw VKFError.other("DecoderModel: activations are stored f32, f16 or bf16, not \(activationType)")
    }
    self.weights = weights
    self.checkpointing = checkpointing
    self.activationType = activationType
    self.fusedAttention = fusedAttention
    self.headChunkTokens = max(1, headChunkTokens ?? Self.defaultHeadChunkTokens(vocab: weights.shape.vocab))
    invFreq = try weights.backend.tensor(weights.shape.invFreq, shape: [weights.shape.invFreq.count])
    let local = weights.shape.localInvFreq
    localInvFreq = local.isEmpty ? nil : try weights.backend.tensor(local, shape: [local.count])
  }

  /// f32 logits one LM-head chunk may hold: 2^25 (128 MiB) — 640 rows of SmolLM2's 49 152
  /// vocabulary, 256 of Llama 3's 128 256; large enough that each chunk's matmuls stay
  /// efficient, small beside the activations of any batch worth chunking.
  public static let headChunkElements = 1 << 25

  /// Rows per LM-head chunk for a vocabulary: `headChunkElements / vocab`, rounded down to a
  /// multiple of 64 (chunk views then start at 256-byte-aligned offsets), at least 64.
  public static func defaultHeadChunkTokens(vocab: Int) -> Int {
    max(64, headChunkElements / max(vocab, 1) / 64 * 64)
  }

  /// Device bytes of a (batch, tokens) training pass's activations, measured by carving the
  /// arena exactly as a pass does (every block's buffers: q/k norms, sandwich norms, 16-bit
  /// copies, the LM-head chunk), plus the ids, targets and positions (i32) and the ones
  /// vector that live beside it: what `MemoryEstimate` reports, never a hand-derived twin.
  /// `moeRowAlignment`: the backend's expert-row alignment (`Backend.moeRowAlignment`); the
  /// default, 1, is both backends'.
  public static func activationBytes(shape: TransformerShape, batch: Int, tokens: Int, checkpointing: Bool,
                                     headChunkTokens: Int? = nil, fusedAttention: Bool = true,
                                     activationType: DType = .f32, moeRowAlignment: Int = 1) -> Int {
    let n = batch * tokens
    let head = max(1, headChunkTokens ?? defaultHeadChunkTokens(vocab: shape.vocab))
    // The measuring carve views no storage, so it cannot fail.
    let arena = (try? ActivationArena.f32Elements(shape: shape, batch: batch, tokens: tokens,
                                                  savesEveryLayer: !checkpointing, headTokens: head,
                                                  fusedAttention: fusedAttention, activationType: activationType,
                                                  moeAlignment: moeRowAlignment)) ?? 0
    let ones = onesCount(shape: shape, tokens: n)
    return (arena + DecoderWeights.aligned(n)) * 4 + (2 * DecoderWeights.aligned(n) + DecoderWeights.aligned(ones)) * 4
  }

  /// The ones the model keeps for N tokens: N (bias gradients' row sums), or C when larger
  /// with a shared expert (its scalar gate's row sums over C).
  static func onesCount(shape: TransformerShape, tokens n: Int) -> Int {
    (shape.moe?.sharedIntermediate ?? 0) > 0 ? max(n, shape.hidden) : n
  }

  /// Logits (N, V) of the last forward pass without targets (passes with targets keep only
  /// one chunk of logits at a time).
  public var logits: Tensor? { lastLogits }

  /// The temperature of the per-token losses: −log_softmax(logits / T)[target] (GRPO's
  /// log-probs at its sampling temperature); 1 = plain cross-entropy. Generation ignores it.
  public private(set) var lossTemperature: Float = 1

  /// Sets `lossTemperature`; refused for a model with a final logit soft-cap (Gemma 2).
  public func setLossTemperature(_ t: Float) throws {
    guard t > 0, t.isFinite else { throw VKFError.other("loss temperature \(t) must be finite and > 0") }
    guard t == 1 || shape.finalLogitSoftcap == 0 else {
      throw VKFError.other("a loss temperature ≠ 1 on a model with final_logit_softcapping is not supported")
    }
    lossTemperature = t
  }

  /// The activation arenas' shared f32 allocation (tests: its identity and size).
  public var activationStorage: TensorStorage? { arena?.storage.storage }

  /// The same allocation as one flat f32 tensor, for a KV cache to borrow between steps.
  var activationArenaTensor: Tensor? { (arena ?? arenas.values.first)?.storage }

  /// Sets every parameter gradient to zero.
  public func zeroGradients() throws { try weights.zeroGradients() }

  // MARK: - Forward

  /// Runs the model on ids (B, T) row-major. With targets (B, T; −100 ignored) computes the
  /// per-token losses (read them with `loss()`); with `computeGradients` also dLogits, in
  /// place of the logits, for `backward()`. `lossNormalizer`: divide the summed loss by this
  /// instead of the number of non-ignored targets — the total over every micro-batch of a
  /// step makes accumulated gradients equal those of the whole batch.
  /// `weightedLater`: the backward takes per-token weights (`backward(tokenWeights:)`).
  /// `tokenMask` (B·T, 1 real, 0 padding) is what a mixture-of-experts model's load-balancing
  /// loss counts (nil: every token); `logProbsOnly`: see `forwardStaged`.
  public func forward(ids: [Int32], targets: [Int32]? = nil, batch: Int,
                      lossNormalizer: Float? = nil, computeGradients: Bool = false,
                      weightedLater: Bool = false, logProbsOnly: Bool = false, tokenMask: [Float]? = nil) throws {
    if let targets {
      let trained = Float(targets.filter { $0 != Self.ignoreIndex }.count)
      try stage(ids: ids, targets: targets, batch: batch, tokenMask: tokenMask,
                auxLossWeight: lossNormalizer.map { trained / $0 } ?? 1)
      if lossNormalizer == nil, !targets.contains(where: { $0 != Self.ignoreIndex }) {
        throw VKFError.other("DecoderModel.forward: every target is ignored (−100); "
          + "pass lossNormalizer to run such a micro-batch")
      }
      try forwardStaged(lossNormalizer: lossNormalizer.map { .value($0) } ?? .targetCount,
                        computeGradients: computeGradients, weightedLater: weightedLater, logProbsOnly: logProbsOnly)
      return
    }
    guard !computeGradients else {
      throw VKFError.other("DecoderModel.forward: computeGradients needs targets")
    }
    try checkIDs(ids, batch: batch, op: "DecoderModel.forward")
    let ar = try arena(batch: batch, tokens: ids.count / batch)
    try backend.upload(ids, to: ar.ids)
    try trunk(ar, saving: false)
    let n = ids.count
    if (fullLogits?.count ?? 0) < n * shape.vocab {
      fullLogits = nil; lastLogits = nil
      fullLogits = try backend.allocate([n * shape.vocab])
    }
    guard let full = fullLogits else { throw VKFError.other("DecoderModel.forward: logits buffer missing") }
    let logits = try full.view(shape: [n, shape.vocab])
    try lmHead.logits(backend, ar.finalNormed, into: logits)  // (N, C) → (N, V)
    lastLogits = logits
    pending = .none
  }

  /// Checks ids (B, T) and targets and uploads them into the arena of their shape, which the
  /// next `forwardStaged` uses. Uploads never wait: a replayed step stages each micro-batch
  /// between replays of one recorded `forwardStaged` + `backward` per shape.
  /// A mixture-of-experts model's load-balancing loss counts the tokens `tokenMask` marks 1
  /// (nil: all) and enters the loss × `auxLossWeight` (the micro-batch's share of the step:
  /// its trained targets / the step's).
  public func stage(ids: [Int32], targets: [Int32], batch: Int, tokenMask: [Float]? = nil,
                    auxLossWeight: Float = 1) throws {
    try checkIDs(ids, batch: batch, op: "DecoderModel.forward")
    if targets.count != ids.count {
      throw VKFError.shapeMismatch(op: "DecoderModel.forward",
        detail: "\(targets.count) targets for \(ids.count) ids")
    }
    let vocab = Int32(shape.vocab)
    if let bad = targets.first(where: { $0 != Self.ignoreIndex && ($0 < 0 || $0 >= vocab) }) {
      throw VKFError.outOfRange(op: "DecoderModel.forward", detail: "target \(bad) ∉ [0, \(vocab)) ∪ {−100}")
    }
    let ar = try arena(batch: batch, tokens: ids.count / batch)
    try backend.upload(ids, to: ar.ids)
    try backend.upload(targets, to: ar.targets)
    if let m = ar.moe {
      if let tokenMask {
        guard tokenMask.count == ids.count else {
          throw VKFError.shapeMismatch(op: "DecoderModel.forward", detail: "\(tokenMask.count) mask values for \(ids.count) ids")
        }
        try backend.upload(tokenMask, to: m.tokenMask)
      } else {
        try backend.fill(m.tokenMask, value: 1)
      }
      try backend.upload([auxLossWeight], to: m.auxWeight)
    }
    stagedArena = ar
    stagedTargetCount = targets.reduce(0) { $0 + ($1 == Self.ignoreIndex ? 0 : 1) }
  }

  /// The arena the last `stage` filled.
  private var stagedArena: ActivationArena?
  /// Trained targets of the last `stage` (what `.targetCount` means for every chunk).
  private var stagedTargetCount = 0

  /// Forward with loss on the inputs of the last `stage` — ops only, no host transfer, so
  /// it can be recorded. `lossNormalizer` divides the summed loss (`.targetCount`: the staged
  /// batch's trained targets, fixed when recorded; `.tensor`: read when the op runs). With
  /// `computeGradients`, each chunk's dL/dlogits go straight through the LM head into
  /// dL/dhidden (and the head's gradients) for `backward()`; with `weightedLater` too, the
  /// backward is `backward(tokenWeights:)`.
  /// A mixture-of-experts model's load-balancing loss joins the first token's loss unless
  /// `logProbsOnly` or `weightedLater`: then the per-token losses are the targets' −log p
  /// alone (a sequence-level objective sums them per row; `queueAuxLoss` places the loss).
  public func forwardStaged(lossNormalizer: LossNormalizer, computeGradients: Bool,
                            weightedLater: Bool = false, logProbsOnly: Bool = false) throws {
    guard let ar = stagedArena else {
      throw VKFError.other("DecoderModel.forwardStaged: stage a batch first")
    }
    if computeGradients, !weights.hasGradients {
      throw VKFError.other("DecoderModel.forward: no parameter is trainable "
        + "(load the weights with trainable: .all or .named(…))")
    }
    arena = ar
    pending = .none
    try trunk(ar, saving: computeGradients)
    if case .targetCount = lossNormalizer {
      headNormalizer = .value(Float(max(stagedTargetCount, 1)))
    } else {
      headNormalizer = lossNormalizer
    }
    // A trained head's weighted gradients need the weights: its chunks are redone then.
    let gradientsNow = computeGradients && !(weightedLater && weights.lmHead.isTrained)
    for r in headChunks(ar) { try headChunk(ar, r, gradients: gradientsNow, tokenWeights: nil) }
    if let m = ar.moe, let ms = shape.moe, ms.auxLossCoefficient > 0, !weightedLater, !logProbsOnly {
      // The load-balancing loss joins the first token's loss (Σ losses is the pass's loss);
      // its gradient per expert waits in auxGradient for the sparse layers' backward.
      try backend.moeAuxLoss(stats: m.stats, coefficient: ms.auxLossCoefficient, weight: m.auxWeight,
                             lossSum: try ar.losses.view(offset: 0, shape: [1]), gradient: m.auxGradient)
    }
    pending = computeGradients ? (weightedLater ? .weighted : .trunk) : .none
  }

  /// Whether passes with a loss add the mixture-of-experts load-balancing loss (a sparse
  /// model with a positive `MoEShape.auxLossCoefficient`).
  public var trainsAuxLoss: Bool { (shape.moe?.auxLossCoefficient ?? 0) > 0 }

  /// The load-balancing loss of the last trunk pass when the caller places it (a sequence-level
  /// objective: after `forwardStaged(…, weightedLater: true)` or `forwardHiddenStaged`):
  /// lossSum[0] += coefficient · the staged `auxLossWeight` · aux, and its gradient waits for
  /// the backward that follows. Ops only (recordable); nothing on a model that trains none.
  public func queueAuxLoss(into lossSum: Tensor) throws {
    guard trainsAuxLoss, let ms = shape.moe else { return }
    guard let m = arena?.moe, pending == .weighted || hiddenBackwardPending else {
      throw VKFError.other("DecoderModel.queueAuxLoss: run a weighted or hidden forward with gradients first")
    }
    try backend.moeAuxLoss(stats: m.stats, coefficient: ms.auxLossCoefficient, weight: m.auxWeight,
                           lossSum: try lossSum.view(offset: 0, shape: [1]), gradient: m.auxGradient)
  }

  /// The LM head as a component: `weights.lmHead` (whatever adapter it carries now), the
  /// final soft-cap and this model's chunk rows.
  public var lmHead: LanguageModelHead {
    var head = LanguageModelHead(projection: weights.lmHead, softcap: shape.finalLogitSoftcap, chunkRows: headChunkTokens)
    head.logitScale = 1 / lossTemperature
    return head
  }

  /// Row ranges of the LM-head chunks of `ar`.
  private func headChunks(_ ar: ActivationArena) -> [Range<Int>] { lmHead.chunks(rows: ar.batch * ar.tokens) }

  /// Rows `r` through the LM head and its loss (`LanguageModelHead.lossChunk`); dL/dhidden
  /// rows only when something below the head trains.
  private func headChunk(_ ar: ActivationArena, _ r: Range<Int>, gradients: Bool, tokenWeights: Tensor?) throws {
    let needsDx = weights.lowestTrainedLayer != nil || weights.finalNormGrad != nil
    try lmHead.lossChunk(backend, x: try ar.finalNormed.rows(r), targets: try ar.targets.rows(r),
                         logits: try ar.logits.view(shape: [r.count, shape.vocab]), normalizer: headNormalizer,
                         losses: try ar.losses.rows(r), gradients: gradients, tokenWeights: try tokenWeights?.rows(r),
                         dx: needsDx ? try ar.dHidden.rows(r) : nil, ones: try ar.ones.rows(r))
  }

  /// The final normed hidden states (N, C) of the last pass, valid until the next one: the
  /// input of a second head on a pass with targets (PPO's value head).
  public var finalHidden: Tensor? { arena?.finalNormed }

  /// Per-token losses (N) of the last pass with targets, on the device: Σ is its loss.
  public var tokenLossTensor: Tensor? { arena?.losses }

  /// Per-token weights (N) for `backward(tokenWeights:)` of the last pass's shape, on the
  /// device: a sequence-level loss computed on the device writes them here.
  public var tokenWeightTensor: Tensor? { arena?.tokenWeights }

  /// Ones (N) for the last pass's shape (row sums as matmuls).
  public var onesTensor: Tensor? { arena?.ones }

  /// Makes the arenas' shared allocation large enough for (batch, tokens) now, so shapes met
  /// later reuse it instead of growing it (a recorded pass keeps the allocation it saw).
  public func reserve(batch: Int, tokens: Int) throws {
    _ = try arena(batch: batch, tokens: tokens)
  }

  private func checkIDs(_ ids: [Int32], batch: Int, op: String) throws {
    guard batch > 0, ids.count % batch == 0, ids.count > 0 else {
      throw VKFError.shapeMismatch(op: op, detail: "\(ids.count) ids do not form \(batch) rows")
    }
    let vocab = Int32(shape.vocab)
    if let bad = ids.first(where: { $0 < 0 || $0 >= vocab }) {
      throw VKFError.outOfRange(op: op, detail: "token id \(bad) ∉ [0, \(vocab))")
    }
  }

  /// The mean loss of the last forward pass with targets (Σ of the per-token losses; with a
  /// `lossNormalizer`, this micro-batch's share). Waits for the GPU.
  public func loss() throws -> Float {
    guard let ar = arena else { throw VKFError.other("DecoderModel.loss: run forward first") }
    return Float(try backend.floats(ar.losses).reduce(0.0) { $0 + Double($1) })
  }

  // MARK: - Backward

  /// Accumulates the gradients of the last forward pass's loss into `weights.gradients`.
  public func backward() throws {
    guard pending == .trunk, let ar = arena else {
      throw VKFError.other(pending == .weighted
        ? "DecoderModel.backward: the forward pass expects per-token weights (backward(tokenWeights:))"
        : "DecoderModel.backward: call forward(…, computeGradients: true) first")
    }
    pending = .none
    guard weights.finalNormGrad != nil || weights.lowestTrainedLayer != nil else { return }
    try backwardBelowHead(ar)
  }

  /// The backward of a forward with `weightedLater`: the loss is Σ_i w_i·loss_i (w: N values
  /// in (B, T) order, on the device), so a sequence-level objective (DPO) whose gradient is the
  /// cross-entropy's reweighted per token runs without ever holding N × V logits.
  public func backward(tokenWeights w: Tensor) throws {
    try backward(tokenWeights: w, addingToHiddenGradient: { _ in })
  }

  /// `backward(tokenWeights:)` with a second head on the same final hidden states (PPO's
  /// value head): `add` receives dL/dhidden (N, C) of the weighted LM-head loss and adds its
  /// own head's share (and takes its head's gradient) before the trunk's backward.
  public func backward(tokenWeights: [Float], addingToHiddenGradient add: (Tensor) throws -> Void) throws {
    let ar = try weightedArena(weights: tokenWeights.count)
    try backend.upload(tokenWeights, to: ar.tokenWeights)
    try backward(tokenWeights: ar.tokenWeights, addingToHiddenGradient: add)
  }

  private func backward(tokenWeights w: Tensor, addingToHiddenGradient add: (Tensor) throws -> Void) throws {
    let ar = try weightedArena(weights: w.count)
    pending = .none
    let w = try w.reshaped([w.count])
    let below = weights.finalNormGrad != nil || weights.lowestTrainedLayer != nil
    if weights.lmHead.isTrained {
      for r in headChunks(ar) { try headChunk(ar, r, gradients: true, tokenWeights: w) }
    } else if below {
      // dL/dhidden_i = w_i · (dlogits_i · W): the forward's unweighted rows, scaled.
      try backend.scaleRows(ar.dHidden, weights: w, into: ar.dHidden)
    }
    try add(ar.dHidden)
    if below { try backwardBelowHead(ar) }
  }

  /// `backward(tokenWeights:)` with host weights, uploaded into the arena's weight buffer.
  public func backward(tokenWeights: [Float]) throws {
    let ar = try weightedArena(weights: tokenWeights.count)
    try backend.upload(tokenWeights, to: ar.tokenWeights)
    try backward(tokenWeights: ar.tokenWeights)
  }

  /// The arena of a pending weighted backward, checked against `count` token weights.
  private func weightedArena(weights count: Int) throws -> ActivationArena {
    guard pending == .weighted, let ar = arena else {
      throw VKFError.other("DecoderModel.backward(tokenWeights:): call forward(…, computeGradients: true, "
        + "weightedLater: true) first")
    }
    guard count == ar.batch * ar.tokens else {
      throw VKFError.shapeMismatch(op: "DecoderModel.backward(tokenWeights:)",
        detail: "\(count) weights for \(ar.batch * ar.tokens) tokens")
    }
    return ar
  }

  /// From dL/d(final normed hidden) in `ar.dHidden` down to every trained parameter.
  private func backwardBelowHead(_ ar: ActivationArena) throws {
    let be = backend, s = shape
    let lowest = weights.lowestTrainedLayer
    try be.rmsNormBackward(ar.dHidden, x: ar.residual[s.layers], weight: weights.finalNorm,
                           weightOffset: s.normWeightOffset, rstd: ar.finalRstd, dx: ar.dResidual,
                           dWeight: weights.finalNormGrad)
    guard let lowest else { return }
    for l in stride(from: s.layers - 1, through: lowest, by: -1) {
      let layer = try layer(l, ar)
      let saved = ar.layerSet(l)
      if !ar.savesEveryLayer {
        try layer.forward(be, x: ar.residual[l], y: ar.residual[l + 1], saving: saved, recomputing: true)
      } else {
        try ar.load(l, be)  // 16-bit activations widened into the working set (f32: nothing)
      }
      try layer.backward(be, x: ar.residual[l], saved: saved)
    }
    if let dTable = weights.embeddingGrad {
      // Through the lookup's scale (Gemma's √hidden); dResidual is not needed after this.
      if s.embeddingScale != 1 { try be.scale(ar.dResidual, by: s.embeddingScale, into: ar.dResidual) }
      try be.embeddingBackward(ids: ar.ids, dOut: ar.dResidual, dTable: dTable)
    }
  }

  // MARK: - Sequence-level objectives (DPO, reward models)

  /// Per-token losses −log p(target) of the last forward pass with targets, each divided by
  /// that pass's normalizer (0 at ignored targets), in row-major (B, T) order. Waits.
  public func tokenLosses() throws -> [Float] {
    guard let ar = arena else { throw VKFError.other("DecoderModel.tokenLosses: run forward first") }
    return try backend.floats(ar.losses)
  }

  /// Runs the model up to the final RMSNorm (no LM head) and returns the normed hidden states
  /// (N, C), valid until the next forward: the input of a scalar head (reward model). With
  /// `computeGradients`, fill `hiddenGradient` with dL/dhidden and call `backwardFromHidden()`.
  public func forwardHidden(ids: [Int32], batch: Int, computeGradients: Bool = false) throws -> Tensor {
    try checkIDs(ids, batch: batch, op: "DecoderModel.forwardHidden")
    if computeGradients, !weights.hasGradients {
      throw VKFError.other("DecoderModel.forwardHidden: no parameter of the model is trainable")
    }
    let ar = try arena(batch: batch, tokens: ids.count / batch)
    try backend.upload(ids, to: ar.ids)
    try trunk(ar, saving: computeGradients)
    pending = .none
    hiddenBackwardPending = computeGradients
    return ar.finalNormed
  }

  /// `forwardHidden` on the inputs of the last `stage` (its targets unused) — ops only, so
  /// it can be recorded and replayed (a reward model's staged step).
  public func forwardHiddenStaged(computeGradients: Bool) throws -> Tensor {
    guard let ar = stagedArena else {
      throw VKFError.other("DecoderModel.forwardHiddenStaged: stage a batch first")
    }
    if computeGradients, !weights.hasGradients {
      throw VKFError.other("DecoderModel.forwardHidden: no parameter of the model is trainable")
    }
    try trunk(ar, saving: computeGradients)
    pending = .none
    hiddenBackwardPending = computeGradients
    return ar.finalNormed
  }

  /// The (N, C) buffer for dL/d(hidden) of the last `forwardHidden`; overwrite it entirely.
  public var hiddenGradient: Tensor? { arena?.dHidden }

  /// Accumulates parameter gradients from `hiddenGradient` (see `forwardHidden`).
  public func backwardFromHidden() throws {
    guard hiddenBackwardPending, let ar = arena else {
      throw VKFError.other("DecoderModel.backwardFromHidden: call forwardHidden(…, computeGradients: true) first")
    }
    hiddenBackwardPending = false
    guard weights.finalNormGrad != nil || weights.lowestTrainedLayer != nil else { return }
    try backwardBelowHead(ar)
  }

  // MARK: - Helpers

  /// Embedding → layers → final RMSNorm on the ids in `ar` (uploaded by the caller).
  /// `saving`: a backward follows, so 16-bit arenas keep their rounded copies (a pass without
  /// gradients — DPO's reference pass, evaluation — skips those casts).
  private func trunk(_ ar: ActivationArena, saving: Bool) throws {
    arena = ar
    let be = backend, s = shape
    if let m = ar.moe, let ms = s.moe, ms.auxLossCoefficient > 0 {
      // Load-balancing sums start over; the gradient stays 0 unless a loss pass computes it.
      try be.fill(m.stats, value: 0)
      try be.fill(m.auxGradient, value: 0)
    }
    try be.embedding(ids: ar.ids, table: weights.embedding, into: ar.residual[0])
    if s.embeddingScale != 1 { try be.scale(ar.residual[0], by: s.embeddingScale, into: ar.residual[0]) }
    for l in 0..<s.layers {
      try layer(l, ar).forward(be, x: ar.residual[l], y: ar.residual[l + 1], saving: ar.layerSet(l))
      if saving, ar.savesEveryLayer { try ar.store(l, be) }  // 16-bit copies (f32: nothing)
    }
    try be.rmsNorm(ar.residual[s.layers], weight: weights.finalNorm, weightOffset: s.normWeightOffset,
                   eps: s.rmsNormEps, into: ar.finalNormed, rstd: ar.finalRstd)
  }

  /// Layer `l`'s RoPE table: the local one on sliding-window layers when the model has one.
  func ropeTable(layer l: Int) -> Tensor {
    if let localInvFreq, shape.window(layer: l) > 0 { return localInvFreq }
    return invFreq
  }

  /// The ignored target (PyTorch's default `ignore_index`).
  public static let ignoreIndex = LanguageModelHead.ignoreIndex

  private func layer(_ l: Int, _ ar: ActivationArena) throws -> DecoderLayer {
    DecoderLayer(shape: shape, weights: weights.layers[l], arena: ar, invFreq: ropeTable(layer: l), fused: fusedAttention,
                 window: shape.window(layer: l))
  }

  /// The arena for (batch, tokens): made on first use, then kept. Every arena views one
  /// shared allocation, replaced (and the arenas remade on it) only when a larger shape comes.
  private func arena(batch: Int, tokens: Int) throws -> ActivationArena {
    let key = ArenaShape(batch: batch, tokens: tokens)
    if let a = arenas[key] { return a }
    let saves = weights.hasGradients && !checkpointing
    let n = batch * tokens
    var previous = arenas.values.first
    if let p = previous, try ActivationArena.f32Elements(shape: shape, batch: batch, tokens: tokens,
                                                         savesEveryLayer: saves, headTokens: headChunkTokens,
                                                         fusedAttention: fusedAttention,
                                                         activationType: activationType,
                                                         moeAlignment: backend.moeRowAlignment) > p.storage.count
                           || 2 * DecoderWeights.aligned(n) > p.intStorage.count {
      // Release the old allocation first (recordings still holding views keep theirs alive).
      arenas = [:]; arena = nil; stagedArena = nil; previous = nil
    }
    let onesNeeded = Self.onesCount(shape: shape, tokens: n)
    if (ones?.count ?? 0) < onesNeeded {
      ones = nil
      let t = try backend.allocate([onesNeeded])
      try backend.fill(t, value: 1)
      ones = t
    }
    guard let ones else { throw VKFError.other("DecoderModel: ones vector missing") }
    let a = try ActivationArena(shape: shape, batch: batch, tokens: tokens, savesEveryLayer: saves,
                                headTokens: headChunkTokens, fusedAttention: fusedAttention,
                                activationType: activationType, previous: previous,
                                ones: ones, backend: backend)
    arenas[key] = a
    return a
  }
}
