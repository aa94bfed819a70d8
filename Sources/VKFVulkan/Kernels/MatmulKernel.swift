import Foundation
import VKFCore

// MARK: - Tiling shared by matmul.comp, matmul_nf4.comp and lora_forward.comp

/// Tile sizes of `Shaders/common/matmul_tile.glsl`, passed as specialization constants.
struct MatmulTiling: Equatable {
  /// Output rows and columns per workgroup, k per shared-memory step, outputs per invocation.
  var bm: Int, bn: Int, bk: Int, tm: Int, tn: Int

  /// Measured best on lavapipe (2 cores): 64×64 tile, 8×8 per invocation (64 invocations), BK 8.
  static let lavapipe = MatmulTiling(bm: 64, bn: 64, bk: 8, tm: 8, tn: 8)

  /// The tiling in force: `VKF_MATMUL_TILE=bm,bn,bk,tm,tn` (for tuning on a new device;
  /// each must divide evenly: bm % tm, bn % tn, 4 ≤ threads ≤ 1024), else `lavapipe`.
  static let current: MatmulTiling = {
    guard let spec = ProcessInfo.processInfo.environment["VKF_MATMUL_TILE"] else { return lavapipe }
    let v = spec.split(separator: ",").compactMap { Int($0) }
    guard v.count == 5, v.allSatisfy({ $0 > 0 }), v[0] % v[3] == 0, v[1] % v[4] == 0 else { return lavapipe }
    let t = MatmulTiling(bm: v[0], bn: v[1], bk: v[2], tm: v[3], tn: v[4])
    return (4...1024).contains(t.threads) ? t : lavapipe
  }()

  /// Invocations per workgroup.
  var threads: Int { (bm / tm) * (bn / tn) }

  /// IDs 0…2 workgroup size, 3…7 BM, BN, BK, TM, TN (the shader's constant_ids).
  var specialization: [UInt32] {
    [threads, 1, 1, bm, bn, bk, tm, tn].map { UInt32($0) }
  }

  /// Workgroup counts for an (m, n) output, `batch` deep, clamped to the device limits; the
  /// shaders grid-stride over the tiles a clamped dimension leaves out.
  func groups(m: Int, n: Int, batch: Int = 1, limits: (Int, Int, Int)) -> (x: Int, y: Int, z: Int) {
    (min((n + bn - 1) / bn, limits.0), min((m + bm - 1) / bm, limits.1), min(batch, limits.2))
  }
}

extension VulkanBackend {
  /// Tests set this to a small grid so the shaders' grid-stride loops (which normally only
  /// run past 65535 workgroups) are exercised on small inputs; nil in production.
  nonisolated(unsafe) static var gridLimitOverride: (Int, Int, Int)?

  /// Workgroup counts the linear-algebra kernels clamp their grids to.
  var gridLimits: (Int, Int, Int) { Self.gridLimitOverride ?? capabilities.maxWorkgroupCount }
}

/// A value as a shader `uint`, or `outOfRange` when it does not fit (shaders index in 32 bits).
func shaderUInt(_ v: Int, _ op: Op) throws -> UInt32 {
  guard let u = UInt32(exactly: v) else {
    throw VKFError.outOfRange(op: op.rawValue, detail: "\(v) exceeds 32-bit shader indexing")
  }
  return u
}

// MARK: - matmul

/// Push constants of `Shaders/matmul.comp`, after the 8 binding offsets (field order matters).
struct MatmulPush {
  var m: UInt32, n: UInt32, k: UInt32
  var lda: UInt32, ldb: UInt32, ldc: UInt32
  var strideA: UInt32, strideB: UInt32, strideC: UInt32
  var batch: UInt32
  var alpha: Float, beta: Float
}

/// The `#define` variants of matmul.comp and matmul_coopmat.comp, and what `devices`
/// reports about them.
public enum MatmulVariant {
  /// The tiling in force, e.g. "64×64×8 (8×8 per invocation)".
  public static var tileDescription: String {
    let t = MatmulTiling.current
    return "\(t.bm)×\(t.bn)×\(t.bk) (\(t.tm)×\(t.tn) per invocation)"
  }

  /// Defines for the transposes and the operands' storage types (`castTypeCodes`: f32,
  /// f16 or bf16, converted as they are staged).
  static func defines(transposeA: Bool, transposeB: Bool, a: DType = .f32, b: DType = .f32) -> [String: String] {
    ["TRANS_A": transposeA ? "1" : "0", "TRANS_B": transposeB ? "1" : "0",
     "A_TYPE": castTypeCodes[a] ?? "0", "B_TYPE": castTypeCodes[b] ?? "0"]
  }
}

extension VulkanBackend {
  /// C = α·op(A)·op(B) + β·C on `matmul.comp` (tiled, register-blocked, batched over z), or
  /// on `matmul_coopmat.comp` when both operands are f16 and the device has cooperative
  /// matrices (`coopmatTiling`).
  public func matmul(_ a: Tensor, _ b: Tensor, into c: Tensor, transposeA: Bool, transposeB: Bool,
                     alpha: Float, beta: Float) throws {
    try checkOwnership(.matmul, a, b, c)
    let g = try ShapeCheck.matmul(a, b, c, transposeA: transposeA, transposeB: transposeB)
    guard g.batch > 0, g.m > 0, g.n > 0 else { return }
    if g.batch == 1, !(fitsBinding(a) && fitsBinding(b) && fitsBinding(c)) {
      return try matmulInChunks(a, b, into: c, g, transposeA: transposeA, transposeB: transposeB,
                                alpha: alpha, beta: beta)
    }
    let t = MatmulTiling.current
    var push = MatmulPush(
      m: try shaderUInt(g.m, .matmul), n: try shaderUInt(g.n, .matmul),
      k: try shaderUInt(g.k, .matmul), lda: try shaderUInt(g.lda, .matmul),
      ldb: try shaderUInt(g.ldb, .matmul), ldc: try shaderUInt(g.ldc, .matmul),
      strideA: try shaderUInt(g.strideA, .matmul), strideB: try shaderUInt(g.strideB, .matmul),
      strideC: try shaderUInt(g.strideC, .matmul), batch: try shaderUInt(g.batch, .matmul),
      alpha: alpha, beta: beta)
    // Both operands f16 on a device with cooperative matrices: tensor cores / WMMA / XMX,
    // exact products of the stored values accumulated in f32 (no K slicing: llvmpipe has none).
    if a.dtype == .f16, b.dtype == .f16, let ct = coopmatTiling {
      return try matmulCoopmat(ct, bindings: [a, b, c], push: push, g: g, transposeA: transposeA,
                               transposeB: transposeB)
    }
    let defines = MatmulVariant.defines(transposeA: transposeA, transposeB: transposeB, a: a.dtype, b: b.dtype)
    let groups = t.groups(m: g.m, n: g.n, batch: g.batch, limits: gridLimits)
    // K slices on drivers that cap a shader's loop iterations (`matmulMaxK`): each slice's
    // operands are views starting at its first k (a column offset within each row, or whole
    // rows, by layout), with the full row lengths, accumulated through β. A multiple of 64
    // keeps 16-bit views 4-byte aligned.
    let slice = capabilities.matmulMaxK.map { max(64, $0 / 64 * 64) } ?? g.k
    var k0 = 0
    repeat {
      let kc = min(slice, g.k - k0)
      let offsetA = transposeA ? k0 * g.lda : k0, offsetB = transposeB ? k0 : k0 * g.ldb
      let av = k0 == 0 ? a : try a.view(offset: offsetA, shape: [a.count - offsetA])
      let bv = k0 == 0 ? b : try b.view(offset: offsetB, shape: [b.count - offsetB])
      push.k = try shaderUInt(kc, .matmul)
      push.beta = k0 == 0 ? beta : 1
      try dispatch("matmul", defines: defines, specialization: t.specialization, bindings: [av, bv, c], push: push,
                   groups: groups)
      k0 += kc
    } while k0 < g.k
  }

  /// A product with an operand past the binding limit (the LM head: logits (N, V) = x·Eᵀ,
  /// dx = dLogits·E, dE = dLogitsᵀ·x) as a sequence of products that fit: over rows of C
  /// and A when A is not transposed, else over k (rows of both stored operands) with the
  /// partial products accumulated through β.
  func matmulInChunks(_ a: Tensor, _ b: Tensor, into c: Tensor, _ g: GemmShape, transposeA: Bool,
                      transposeB: Bool, alpha: Float, beta: Float) throws {
    let a2 = try a.reshaped([a.rowCount, a.lastDim]), b2 = try b.reshaped([b.rowCount, b.lastDim])
    let c2 = try c.reshaped([g.m, g.n])
    // Chunks of an even row count keep a 16-bit operand's slices 4-byte aligned.
    let pairs = a.dtype.size == 2 || b.dtype.size == 2 ? 2 : 1
    if !transposeA, fitsBinding(b) {
      // Rows of A (m, k) and C (m, n) together.
      for r in try rowChunks(rows: g.m, rowBytes: max(g.k, g.n) * 4, multiple: pairs, op: .matmul) {
        try matmul(a2.rows(r), b2, into: c2.rows(r), transposeA: false, transposeB: transposeB,
                   alpha: alpha, beta: beta)
      }
    } else if transposeA, !transposeB, fitsBinding(c) {
      // A stored (k, m) and B stored (k, n): slices of k, accumulated.
      for (i, r) in try rowChunks(rows: g.k, rowBytes: max(g.m, g.n) * 4, multiple: pairs,
                                  op: .matmul).enumerated() {
        try matmul(a2.rows(r), b2.rows(r), into: c2, transposeA: true, transposeB: false,
                   alpha: alpha, beta: i == 0 ? beta : 1)
      }
    } else {
      throw VKFError.unsupported(op: "matmul", detail: "A \(a.shape)\(transposeA ? "ᵀ" : ""), "
        + "B \(b.shape)\(transposeB ? "ᵀ" : ""), C \(c.shape): an operand exceeds the "
        + "\(capabilities.maxStorageBufferRange)-byte binding limit and this layout cannot be split")
    }
  }
}
