/// The dropout masks every backend draws: a counter-based hash of (seed, stream, element), so
/// a mask is a pure function of its inputs — the forward pass, a checkpointed recomputation
/// and the backward pass regenerate the same one without storing it, a recorded step reads a
/// new seed from a tensor each replay, and the CPU and the GPU draw bit-identical masks
/// (32-bit integer arithmetic only; the shader `dropout_mask.comp` mirrors `unit`).
///
/// mask[i] = 0 when unit(key, i) < threshold(p), else keepScale(p) = 1/(1 − p), as
/// `torch.nn.Dropout` scales kept inputs (its random stream differs: no framework shares one).
public enum DropoutMask {
  /// Chris Wellons' lowbias32 integer hash (good avalanche, two multiplies).
  @inline(__always)
  public static func hash(_ v: UInt32) -> UInt32 {
    var x = v
    x ^= x >> 16; x = x &* 0x7FEB_352D
    x ^= x >> 15; x = x &* 0x846C_A68B
    x ^= x >> 16
    return x
  }

  /// The per-op key: the 64-bit seed (low word, high word) and the stream (e.g. which adapter).
  @inline(__always)
  public static func key(seedLow: UInt32, seedHigh: UInt32, stream: UInt32) -> UInt32 {
    hash(seedLow ^ hash(seedHigh ^ hash(stream)))
  }

  /// The 32-bit draw of element `i`.
  @inline(__always)
  public static func unit(key: UInt32, _ i: UInt32) -> UInt32 { hash(hash(i ^ key) &+ key) }

  /// Draws below this are dropped: p · 2³² (p ∈ [0, 1)).
  public static func threshold(_ p: Float) -> UInt32 {
    UInt32(min(Double(p) * 4_294_967_296.0, 4_294_967_295.0))
  }

  /// The value of a kept element: 1/(1 − p), computed once on the host for every backend.
  public static func keepScale(_ p: Float) -> Float { 1 / (1 - p) }

  /// The seed tensor's two 32-bit words for a 64-bit seed (low word first), as i32 bit patterns.
  public static func seedWords(_ seed: UInt64) -> [Int32] {
    [Int32(bitPattern: UInt32(truncatingIfNeeded: seed)), Int32(bitPattern: UInt32(truncatingIfNeeded: seed >> 32))]
  }
}
