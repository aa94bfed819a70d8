import VKFCore
import VKFModel

/// LoRA on one sparse layer's experts (PEFT's `target_parameters` on the stacked
/// `experts.gate_up_proj` / `experts.down_proj`), attached through `ExpertWeights.adapter`.
/// Each expert e has its own low-rank pair: gate and up share one A_e (the fused gate_up
/// parameter's adapter) with B_e split into gate rows and up rows; down has its own A_e, B_e:
///   gate_e(x) += s·(x·A_eᵀ)·B_gate,eᵀ,  up_e(x) += s·(x·A_eᵀ)·B_up,eᵀ,  down_e(z) += s·(z·A'_eᵀ)·B'_eᵀ.
/// Every product runs over all experts at once as a grouped matmul on the dispatched rows;
/// the rank rows s·x·A_eᵀ are recomputed in the backward (R × r, cheap) instead of kept.
/// No dropout (PEFT refuses it on target_parameters). Legend: E experts, R expert rows,
/// C hidden, F expert width, r rank.
public final class ExpertLoRA: ExpertAdapter {
  /// One adapted projection kind: A (E, r, in), B (E, out, r) — for gate_up, B is the gate's
  /// (E, F, r) and `bUp` the up's — and their accumulated gradients.
  public struct Pair {
    public let a, aGrad, b, bGrad: Tensor
    /// gate_up only: the up rows' B (E, F, r) and its gradient.
    public let bUp, bUpGrad: Tensor?
  }

  /// The layer this adapter belongs to.
  public let layer: Int
  /// gate_up's adapter (nil when not targeted) and down's.
  public let gateUp: Pair?, down: Pair?
  /// s: alpha/r, or alpha/√r with rsLoRA.
  public let scaling: Float
  /// False: the experts' base products only (DPO's reference model).
  public var enabled = true
  let workspace: LoRAWorkspace

  init(layer: Int, gateUp: Pair?, down: Pair?, scaling: Float, workspace: LoRAWorkspace) {
    self.layer = layer; self.gateUp = gateUp; self.down = down; self.scaling = scaling; self.workspace = workspace
  }

  /// Rank r.
  private func rank(_ p: Pair) -> Int { p.a.shape[1] }

  /// s·x·A_eᵀ (R, r) of the rows x (R, in), in the workspace.
  private func rankRows(_ be: Backend, _ p: Pair, x: Tensor, offsets: Tensor) throws -> Tensor {
    let t = try workspace.scratch(.expertRank, [x.rowCount, rank(p)])
    try be.groupedMatmul(x, p.a, into: t, offsets: offsets, transposeA: false, transposeB: true, beta: 0)
    try be.scale(t, by: scaling, into: t)
    return t
  }

  public func gateUpForward(_ be: Backend, x: Tensor, offsets: Tensor, gate: Tensor, up: Tensor) throws {
    guard enabled, let p = gateUp, let bUp = p.bUp else { return }
    let t = try rankRows(be, p, x: x, offsets: offsets)
    try be.groupedMatmul(t, p.b, into: gate, offsets: offsets, transposeA: false, transposeB: true, beta: 1)
    try be.groupedMatmul(t, bUp, into: up, offsets: offsets, transposeA: false, transposeB: true, beta: 1)
  }

  public func downForward(_ be: Backend, x: Tensor, offsets: Tensor, into y: Tensor) throws {
    guard enabled, let p = down else { return }
    let t = try rankRows(be, p, x: x, offsets: offsets)
    try be.groupedMatmul(t, p.b, into: y, offsets: offsets, transposeA: false, transposeB: true, beta: 1)
  }

  public func downBackward(_ be: Backend, dy: Tensor, x: Tensor, offsets: Tensor, dx: Tensor) throws {
    guard enabled, let p = down else { return }
    try backward(be, p, dys: [(dy, p.b, p.bGrad)], x: x, offsets: offsets, dx: dx)
  }

  public func gateUpBackward(_ be: Backend, dGate: Tensor, dUp: Tensor, x: Tensor, offsets: Tensor, dx: Tensor) throws {
    guard enabled, let p = gateUp, let bUp = p.bUp, let bUpGrad = p.bUpGrad else { return }
    try backward(be, p, dys: [(dGate, p.b, p.bGrad), (dUp, bUp, bUpGrad)], x: x, offsets: offsets, dx: dx)
  }

  /// With t = s·x·A_eᵀ: dB_e += dy_eᵀ·t for each output part; dt = Σ dy·B_e; dA_e += s·dtᵀ·x;
  /// dx += s·dt·A_e.
  private func backward(_ be: Backend, _ p: Pair, dys: [(dy: Tensor, b: Tensor, bGrad: Tensor)], x: Tensor,
                        offsets: Tensor, dx: Tensor) throws {
    let t = try rankRows(be, p, x: x, offsets: offsets)
    let dt = try workspace.scratch(.expertRankGradient, [x.rowCount, rank(p)])
    for (i, part) in dys.enumerated() {
      try be.groupedMatmul(part.dy, t, into: part.bGrad, offsets: offsets, transposeA: true, transposeB: false, beta: 1)
      try be.groupedMatmul(part.dy, part.b, into: dt, offsets: offsets, transposeA: false, transposeB: false,
                           beta: i == 0 ? 0 : 1)
    }
    try be.scale(dt, by: scaling, into: dt)
    try be.groupedMatmul(dt, x, into: p.aGrad, offsets: offsets, transposeA: true, transposeB: false, beta: 1)
    try be.groupedMatmul(dt, p.a, into: dx, offsets: offsets, transposeA: false, transposeB: false, beta: 1)
  }
}
