import VKFCore

// Mixture-of-experts routing and row movement (moe_route.comp, moe_dispatch.comp,
// moe_gather.comp, moe_combine.comp, moe_combine_back.comp, moe_router_stats.comp,
// moe_aux_loss.comp, moe_route_back.comp); the per-expert products are in
// GroupedMatmulKernel.swift and GroupedMatmulNF4Kernel.swift.
// Legend: N tokens, E experts, K experts per token, R expert rows, C row width.
// The routing (experts, offsets, slots, sources) is data the host never reads: a recorded
// step replays with each step's routing, so every grid covers the worst case and the
// shaders skip what the data leaves out. Indices out of range are skipped where the CPU
// backend throws (reading them back to check would stall the queue).

// MARK: - Push constants

/// Push constants of moe_route.comp (after the 8 binding offsets).
struct MoERoutePush {
  /// Tokens, experts and experts per token.
  var n: UInt32, e: UInt32, k: UInt32
  /// 1: the K weights are divided by their sum.
  var normalize: UInt32
}

/// Push constants of moe_dispatch.comp, every pass (after the 8 binding offsets).
struct MoEDispatchPush {
  /// (token, slot) pairs: N·K.
  var pairs: UInt32
  /// Experts.
  var e: UInt32
  /// Each segment's rows are padded to a multiple of this.
  var alignment: UInt32
  /// Rows of `sources` (R).
  var rows: UInt32
  /// Pairs per counting chunk, and the chunks.
  var chunk: UInt32, chunks: UInt32
}

/// The `PASS` define of moe_dispatch.comp.
enum MoEDispatchPass: Int {
  /// Per-chunk counts of each expert; sources filled with −1.
  case count = 0
  /// Chunk prefixes and offsets (one workgroup).
  case scan = 1
  /// Slots and sources of every pair.
  case scatter = 2
}

/// Push constants of moe_gather.comp (after the 8 binding offsets).
struct MoEGatherPush {
  /// Rows (R) and width (C) of the output.
  var rows: UInt32, cols: UInt32
  /// N·K: sources at or past it are skipped.
  var pairs: UInt32
  /// Experts per token: pair s is token s / k.
  var k: UInt32
  /// 1: rows are scaled by the pair's weight.
  var hasWeights: UInt32
}

/// Push constants of moe_combine.comp (after the 8 binding offsets).
struct MoECombinePush {
  /// Tokens and width.
  var n: UInt32, cols: UInt32
  /// Experts per token.
  var k: UInt32
  /// Rows of `rows` (R): slots at or past it are skipped.
  var rows: UInt32
  /// 1: each term is scaled by its weight.
  var hasWeights: UInt32
  /// 1: added to out's previous value.
  var accumulate: UInt32
}

/// Push constants of moe_combine_back.comp (after the 8 binding offsets).
struct MoECombineBackPush {
  /// N·K: one workgroup each.
  var pairs: UInt32
  /// Width.
  var cols: UInt32
  /// Experts per token.
  var k: UInt32
  /// Rows of `rows` (R): slots at or past it give 0.
  var rows: UInt32
}

/// Push constants of moe_router_stats.comp, both passes (after the 8 binding offsets).
struct MoERouterStatsPush {
  /// Tokens, experts and experts per token.
  var n: UInt32, e: UInt32, k: UInt32
  /// Tokens per partial sum, and the partials (chunks) per statistic.
  var chunk: UInt32, chunks: UInt32
  /// 1: tokens are weighted by tokenMask (binding 2).
  var hasMask: UInt32
}

/// Push constants of moe_aux_loss.comp (after the 8 binding offsets).
struct MoEAuxLossPush {
  /// Experts.
  var e: UInt32
  /// The loss coefficient (router_aux_loss_coef).
  var coefficient: Float
  /// 1: the coefficient is also scaled by weight[0] (binding 1).
  var hasWeight: UInt32
}

/// Push constants of moe_route_back.comp (after the 8 binding offsets).
struct MoERouteBackPush {
  /// Tokens, experts and experts per token.
  var n: UInt32, e: UInt32, k: UInt32
  /// 1: the forward normalised the K weights.
  var normalize: UInt32
  /// 1: binding 4 holds the load-balancing gradient per expert.
  var hasAux: UInt32
  /// 1: binding 5 holds the token mask.
  var hasMask: UInt32
}

// MARK: - Ops

extension VulkanBackend {
  /// Pairs each invocation of moe_dispatch.comp's count and scatter passes scans at most:
  /// short serial loops (lavapipe caps a shader's loops at 65535 iterations) while the scan
  /// pass's per-expert loop over the chunks stays short too (512 chunks at N·K = 131072).
  static let moeDispatchChunk = 256

  /// Tokens per partial sum of moe_router_stats.comp: a count statistic loops over
  /// chunk·K pairs (1024 at K = 8), the final pass over N / chunk partials.
  static let moeRouterStatsChunk = 128

  /// moe_route.comp: softmax and top-K, one invocation per token.
  public func moeRoute(logits: Tensor, topK: Int, normalize: Bool, probs: Tensor, weights: Tensor,
                       experts: Tensor) throws {
    let op = Op.moeRoute
    try checkOwnership(op, logits, probs, weights, experts)
    // logits, probs: (N, E); weights, experts: (N, K)
    let (n, e, k) = try ShapeCheck.moeRoute(logits, topK: topK, probs: probs, weights: weights, experts: experts)
    guard n > 0 else { return }
    _ = try shaderUInt(n * e, op)
    let push = MoERoutePush(n: try shaderUInt(n, op), e: try shaderUInt(e, op), k: try shaderUInt(k, op),
                            normalize: normalize ? 1 : 0)
    try dispatch("moe_route", specialization: blockSpecialization, bindings: [logits, probs, weights, experts],
                 push: push, groups: try elementGroups(n, op: op))
  }

  /// moe_dispatch.comp: counts per chunk, a one-workgroup scan, then a scatter; the same
  /// offsets, slots and sources as the CPU's for the same alignment.
  public func moeDispatch(experts: Tensor, expertCount: Int, alignment: Int, offsets: Tensor, slots: Tensor,
                          sources: Tensor) throws {
    let op = Op.moeDispatch
    try checkOwnership(op, experts, offsets, slots, sources)
    // experts, slots: (N, K) i32; offsets: (E + 1) i32; sources: (R) i32
    let (n, k, r) = try ShapeCheck.moeDispatch(experts, expertCount: expertCount, alignment: alignment,
                                               offsets: offsets, slots: slots, sources: sources)
    let pairs = n * k, chunk = Self.moeDispatchChunk
    let chunks = (pairs + chunk - 1) / chunk
    let histCount = (chunks + 1) * expertCount
    // Row indices and padded counts (< R + alignment) stay within 32 bits; offsets are i32.
    guard Int32(exactly: r + alignment) != nil else {
      throw VKFError.outOfRange(op: op.rawValue, detail: "\(r) rows with alignment \(alignment) exceed i32 offsets")
    }
    _ = try shaderUInt(histCount, op)
    let push = MoEDispatchPush(pairs: try shaderUInt(pairs, op), e: try shaderUInt(expertCount, op),
                               alignment: try shaderUInt(alignment, op), rows: try shaderUInt(r, op),
                               chunk: try shaderUInt(chunk, op), chunks: try shaderUInt(chunks, op))
    let hist = try scratch(count: histCount)  // u32 words: per-chunk counts, then padded totals
    func pass(_ p: MoEDispatchPass) -> [String: String] { ["PASS": String(p.rawValue)] }
    try dispatch("moe_dispatch", defines: pass(.count), specialization: blockSpecialization,
                 bindings: [experts, hist, sources], push: push,
                 groups: try elementGroups(max(chunks * expertCount, r), op: op))
    try dispatch("moe_dispatch", defines: pass(.scan), specialization: blockSpecialization,
                 bindings: [hist, offsets], push: push, groups: (1, 1, 1))
    try dispatch("moe_dispatch", defines: pass(.scatter), specialization: blockSpecialization,
                 bindings: [experts, hist, offsets, slots, sources], push: push,
                 groups: try elementGroups(pairs, op: op))
  }

  /// moe_gather.comp: one invocation per row element.
  public func moeGather(_ x: Tensor, sources: Tensor, topK: Int, weights: Tensor?, into rows: Tensor) throws {
    let op = Op.moeGather
    try checkOwnership(op, x, sources, weights, rows)
    // x: (N, C); sources: (R) i32; weights: (N, K); rows: (R, C)
    let (n, k, r, c) = try ShapeCheck.moeGather(x, sources: sources, topK: topK, weights: weights, rows: rows)
    guard r * c > 0 else { return }
    _ = try shaderUInt(max(r, n) * c, op)
    let push = MoEGatherPush(rows: try shaderUInt(r, op), cols: try shaderUInt(c, op),
                             pairs: try shaderUInt(n * k, op), k: try shaderUInt(k, op),
                             hasWeights: weights == nil ? 0 : 1)
    // Binding 2 is only read with weights; any f32 tensor fills it otherwise.
    try dispatch("moe_gather", specialization: blockSpecialization, bindings: [x, sources, weights ?? x, rows],
                 push: push, groups: try elementGroups(r * c, op: op))
  }

  /// moe_combine.comp: one invocation per output element, its K terms in order.
  public func moeCombine(_ rows: Tensor, slots: Tensor, weights: Tensor?, into out: Tensor, accumulate: Bool) throws {
    let op = Op.moeCombine
    try checkOwnership(op, rows, slots, weights, out)
    // rows: (R, C); slots, weights: (N, K); out: (N, C)
    let (n, k, r, c) = try ShapeCheck.moeCombine(op, rows, slots: slots, weights: weights, out: out)
    guard n * c > 0 else { return }
    _ = try shaderUInt(max(r, n) * c, op)
    let push = MoECombinePush(n: try shaderUInt(n, op), cols: try shaderUInt(c, op), k: try shaderUInt(k, op),
                              rows: try shaderUInt(r, op), hasWeights: weights == nil ? 0 : 1,
                              accumulate: accumulate ? 1 : 0)
    try dispatch("moe_combine", specialization: blockSpecialization, bindings: [rows, slots, weights ?? rows, out],
                 push: push, groups: try elementGroups(n * c, op: op))
  }

  /// moe_combine_back.comp: one workgroup per pair, a tree-reduced dot product.
  public func moeCombineBackward(_ dOut: Tensor, rows: Tensor, slots: Tensor, dWeights: Tensor) throws {
    let op = Op.moeCombineBackward
    try checkOwnership(op, dOut, rows, slots, dWeights)
    // dOut: (N, C); rows: (R, C); slots, dWeights: (N, K)
    let (n, k, r, c) = try ShapeCheck.moeCombineBackward(dOut, rows: rows, slots: slots, dWeights: dWeights)
    guard n * k > 0 else { return }
    _ = try shaderUInt(max(r, n) * c, op)
    let push = MoECombineBackPush(pairs: try shaderUInt(n * k, op), cols: try shaderUInt(c, op),
                                  k: try shaderUInt(k, op), rows: try shaderUInt(r, op))
    try dispatch("moe_combine_back", defines: reductionVariant(), specialization: blockSpecialization,
                 bindings: [dOut, rows, slots, dWeights], push: push, groups: try spreadGroups(n * k, op: op))
  }

  /// moe_router_stats.comp: per-chunk partial sums into scratch, then one sum per statistic
  /// added into stats (deterministic, no float atomics).
  public func moeRouterStatistics(probs: Tensor, experts: Tensor, tokenMask: Tensor?, into stats: Tensor) throws {
    let op = Op.moeRouterStatistics
    try checkOwnership(op, probs, experts, tokenMask, stats)
    // probs: (N, E); experts: (N, K) i32; tokenMask: (N); stats: (2E + 1)
    let e = try ShapeCheck.moeRouterStatistics(probs: probs, experts: experts, tokenMask: tokenMask, stats: stats)
    let n = probs.rowCount
    guard n > 0 else { return }
    let k = experts.count / n, chunk = Self.moeRouterStatsChunk
    let chunks = (n + chunk - 1) / chunk, width = 2 * e + 1
    _ = try shaderUInt(max(chunks * width, n * max(e, k)), op)
    let push = MoERouterStatsPush(n: try shaderUInt(n, op), e: try shaderUInt(e, op), k: try shaderUInt(k, op),
                                  chunk: try shaderUInt(chunk, op), chunks: try shaderUInt(chunks, op),
                                  hasMask: tokenMask == nil ? 0 : 1)
    let partial = try scratch(count: chunks * width)
    try dispatch("moe_router_stats", defines: ["PASS": "0"], specialization: blockSpecialization,
                 bindings: [probs, experts, tokenMask ?? probs, partial], push: push,
                 groups: try elementGroups(chunks * width, op: op))
    try dispatch("moe_router_stats", defines: ["PASS": "1"], specialization: blockSpecialization,
                 bindings: [partial, stats], push: push, groups: try elementGroups(width, op: op))
  }

  /// moe_aux_loss.comp: one workgroup; the loss summed in expert order by one invocation.
  public func moeAuxLoss(stats: Tensor, coefficient: Float, weight: Tensor?, lossSum: Tensor, gradient: Tensor) throws {
    let op = Op.moeAuxLoss
    try checkOwnership(op, stats, weight, lossSum, gradient)
    // stats: (2E + 1); weight, lossSum: (1); gradient: (E)
    let e = try ShapeCheck.moeAuxLoss(stats: stats, weight: weight, lossSum: lossSum, gradient: gradient)
    guard e > 0 else { return }
    let push = MoEAuxLossPush(e: try shaderUInt(e, op), coefficient: coefficient, hasWeight: weight == nil ? 0 : 1)
    try dispatch("moe_aux_loss", specialization: blockSpecialization,
                 bindings: [stats, weight ?? stats, lossSum, gradient], push: push, groups: (1, 1, 1))
  }

  /// moe_route_back.comp: one invocation per token, its sums in the CPU's order.
  public func moeRouteBackward(dWeights: Tensor, probs: Tensor, weights: Tensor, experts: Tensor, normalize: Bool,
                               auxGradient: Tensor?, tokenMask: Tensor?, into dLogits: Tensor) throws {
    let op = Op.moeRouteBackward
    try checkOwnership(op, dWeights, probs, weights, experts, auxGradient, tokenMask, dLogits)
    // dWeights, weights, experts: (N, K); probs, dLogits: (N, E); auxGradient: (E); tokenMask: (N)
    let (n, e, k) = try ShapeCheck.moeRouteBackward(dWeights: dWeights, probs: probs, weights: weights,
                                                    experts: experts, auxGradient: auxGradient,
                                                    tokenMask: tokenMask, dLogits: dLogits)
    guard n > 0 else { return }
    _ = try shaderUInt(n * max(e, k), op)
    let push = MoERouteBackPush(n: try shaderUInt(n, op), e: try shaderUInt(e, op), k: try shaderUInt(k, op),
                                normalize: normalize ? 1 : 0, hasAux: auxGradient == nil ? 0 : 1,
                                hasMask: tokenMask == nil ? 0 : 1)
    // Bindings 4 and 5 are only read when present; probs fills them otherwise.
    try dispatch("moe_route_back", specialization: blockSpecialization,
                 bindings: [dWeights, probs, weights, experts, auxGradient ?? probs, tokenMask ?? probs, dLogits],
                 push: push, groups: try elementGroups(n, op: op))
  }
}
