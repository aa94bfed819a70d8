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
    /// LoRA on experts: s·x·A_eᵀ of the expert rows (R, r), and its gradient (R, r).
    case expertRank, expertRankGradient
  }

  let backend: Backend
  private var buffers: [Role: Tensor] = [:]
  private var ones: [Int: Tensor] = [:]
  /// The seed the dropout masks read when the op runs (2 i32 words, `setDropoutSeed`
  /// uploads into it), so a recorded pass draws new masks each replay.
  private var seed: Tensor?
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

  /// Sets the seed of the next masks: uploaded into the seed tensor (device memory, so the
  /// upload is ordered after queued readers without a host wait).
  func setDropoutSeed(_ value: UInt64) throws {
    let t: Tensor
    if let seed { t = seed } else {
      t = try backend.allocate([2], .i32)
      seed = t
    }
    try backend.upload(DropoutMask.seedWords(value), to: t)
  }

  /// Draws the dropout mask of adapter `index` at `step` for an (rows, cols) input into the
  /// mask scratch on the device: keep with probability 1 − p, scaled by 1/(1 − p) as
  /// `torch.nn.Dropout`. The mask is a pure function of (seed, index, step), so the forward
  /// pass, a checkpointed recomputation and the backward pass all see the same one without
  /// storing it.
  func mask(index: Int, step: UInt64, rows: Int, cols: Int, p: Float) throws -> Tensor {
    let t = try scratch(.mask, [rows, cols])
    if seed == nil { try setDropoutSeed(0) }
    guard let seed else { throw VKFError.other("dropout seed tensor missing") }
    let stream = DropoutMask.hash(UInt32(truncatingIfNeeded: index) ^ DropoutMask.hash(UInt32(truncatingIfNeeded: step)))
    try backend.dropoutMask(seed: seed, stream: stream, p: p, into: t)
    return t
  }
}
