import VKFCore

// What a mixture-of-experts layer keeps for its backward, and the scratch its layers share.
// Legend: N tokens, E experts, K experts per token, R = `MoE.rowCapacity` expert rows,
// C hidden, F an expert's width.

/// One sparse layer's routing and expert outputs, kept from its forward for its backward.
struct RoutedActivations {
  /// Router softmax (N, E), the chosen experts' weights (N, K) and ids (N, K) i32.
  var probs, weights, experts: Tensor
  /// Each (token, slot) pair's expert row (N, K) i32, each row's pair (R) i32 (−1: padding),
  /// and the experts' segments (E + 1) i32.
  var slots, sources, offsets: Tensor
  /// The experts' outputs (R, C), before the weighted combine.
  var rows: Tensor
  /// The shared expert's gate and up products (N, Fs) and its scalar gate's logit (N), or nil.
  var sharedGate, sharedUp, sharedLogit: Tensor?

  init(_ c: Carver, _ m: MoEShape, tokens n: Int, rows r: Int, hidden: Int) throws {
    probs = try c.take([n, m.experts])
    weights = try c.take([n, m.topK])
    experts = try c.take([n, m.topK], .i32)
    slots = try c.take([n, m.topK], .i32)
    sources = try c.take([r], .i32)
    offsets = try c.take([m.experts + 1], .i32)
    rows = try c.take([r, hidden])
    if m.sharedIntermediate > 0 {
      sharedGate = try c.take([n, m.sharedIntermediate]); sharedUp = try c.take([n, m.sharedIntermediate])
      sharedLogit = try c.take([n, 1])
    }
  }
}

/// The shared expert's scratch (Qwen2-MoE), shared by the sparse layers of one arena.
/// Legend: Fs the shared expert's width.
struct SharedExpertScratch {
  /// silu(gate)·up (N, Fs), then dL/dgate; dL/d(silu(gate)·up) (N, Fs); dL/dup (N, Fs).
  var act, dAct, dUp: Tensor
  /// The shared expert's output (N, C), then dL/d(output) and products with it.
  var out: Tensor
  /// σ of the scalar gate (N, 1), and dL/dσ then dL/dlogit (N, 1).
  var sigma, dSigma: Tensor

  init(_ c: Carver, _ m: MoEShape, tokens n: Int, hidden: Int) throws {
    let f = m.sharedIntermediate
    act = try c.take([n, f]); dAct = try c.take([n, f]); dUp = try c.take([n, f])
    out = try c.take([n, hidden]); sigma = try c.take([n, 1]); dSigma = try c.take([n, 1])
  }
}

/// Scratch shared by every sparse layer of one arena.
struct MoEScratch {
  /// Expert rows R (N·K pairs and each segment's padding) and their alignment.
  let rowCount: Int, alignment: Int
  /// Two (R, C) buffers: gathered inputs, dL/d(expert outputs), dL/d(expert inputs).
  var rowsA, rowsB: Tensor
  /// Router logits in the forward, dL/dlogits in the backward (N, E).
  var router: Tensor
  /// dL/d(routing weights) (N, K).
  var dWeights: Tensor
  /// The load-balancing loss's sums over the layers (2·E + 1) and its per-expert gradient (E).
  var stats, auxGradient: Tensor
  /// 1 for real tokens, 0 for padding (N): what the load-balancing loss counts.
  var tokenMask: Tensor
  /// The micro-batch's share of the step's load-balancing loss (1).
  var auxWeight: Tensor
  /// The shared expert's scratch, or nil.
  var shared: SharedExpertScratch?

  init(_ c: Carver, _ m: MoEShape, tokens n: Int, rows r: Int, hidden: Int, alignment: Int) throws {
    rowCount = r; self.alignment = alignment
    rowsA = try c.take([r, hidden]); rowsB = try c.take([r, hidden])
    router = try c.take([n, m.experts])
    dWeights = try c.take([n, m.topK])
    stats = try c.take([2 * m.experts + 1]); auxGradient = try c.take([m.experts])
    tokenMask = try c.take([n]); auxWeight = try c.take([1])
    if m.sharedIntermediate > 0 { shared = try SharedExpertScratch(c, m, tokens: n, hidden: hidden) }
  }
}
