import VKFCore

/// Scratch tensors and dropout state shared by every adapter of one `LoRAModel`.
///
/// Projections run one after another on one backend queue, so one scratch buffer per role
/// serves them all; each grows to the largest shape asked for and is handed out as a view.
/// Reusing it across adapters is safe because backends order ops on the same memory
/// (`upload` waits for queued readers).
final class LoRAWorkspace {
  /// What a scratch buffer is used for; roles used in the same op sequence never share one.
  enum Role: CaseIterable {
    /// Dropout mask (N, in), values 0 or 1/(1−p).
    case mask
    /// x ⊙ mask (N, in).
    case droppedInput
    /// Gradient wrt the dropped input, or x − x_drop in DoRA's forward (N, in).
    case inputRows
    /// dxa (N, r).
    case rankRows
    /// DoRA: the recomputed adapted output, then dy ⊙ m/‖·‖ (N, out).
    case outputRows
    /// DoRA: W + s·B·A (out, in), and its row-normalised copy (out, in).
    case weight, normalizedWeight
    /// DoRA: a column sum (1, out).
    case columnSum
  }

  let backend: Backend
  private var buffers: [Role: Tensor] = [:]
  private var ones: [Int: Tensor] = [:]
  /// Seed of the dropout masks (`LoRAModel.setDropoutSeed`).
  var dropoutSeed: UInt64 = 0
  /// Dropout applies only while training, like PEFT's `nn.Dropout` after `model.eval()`.
  var training = true

  init(backend: Backend) { self.backend = backend }

  /// A view of `shape` into the role's buffer, reallocated when too small.
  func scratch(_ role: Role, _ shape: [Int]) throws -> Tensor {
    let n = shape.reduce(1, *)
    if let t = buffers[role], t.count >= n { return try t.view(shape: shape) }
    buffers[role] = nil  // release the old one first
    let t = try backend.allocate([max(n, 1)])
    buffers[role] = t
    return try t.view(shape: shape)
  }

  /// A vector of `n` ones (RMSNorm's weight when DoRA takes row norms).
  func ones(_ n: Int) throws -> Tensor {
    if let t = ones[n] { return t }
    let t = try backend.allocate([n])
    try backend.fill(t, value: 1)
    ones[n] = t
    return t
  }

  /// Uploads the dropout mask of adapter `index` at `step` for an (rows, cols) input into the
  /// mask scratch: keep with probability 1 − p, scaled by 1/(1 − p) as `torch.nn.Dropout`.
  /// The mask is a pure function of (seed, index, step), so the forward pass, a checkpointed
  /// recomputation and the backward pass all see the same one without storing it.
  func mask(index: Int, step: UInt64, rows: Int, cols: Int, p: Float) throws -> Tensor {
    let t = try scratch(.mask, [rows, cols])
    var rng = SplitMix64(seed: dropoutSeed ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03)
                           ^ (step &* 0x8CB9_2BA7_2F3D_8DD7))
    let keep = 1 / (1 - p)
    let threshold = Double(p)
    let values = (0..<(rows * cols)).map { _ in rng.nextUnitDouble() < threshold ? Float(0) : keep }
    try backend.upload(values, to: t)
    return t
  }
}
