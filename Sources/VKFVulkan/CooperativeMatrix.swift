import CVulkan
import Foundation
import VKFCore

/// One cooperative-matrix shape `Shaders/matmul_coopmat.comp` can run: f16 A (m × k) times
/// f16 B (k × n) into f32, per subgroup.
public struct CooperativeMatrixShape: Sendable, Equatable, CustomStringConvertible {
  /// Which extension the kernel is compiled for.
  public enum Flavour: String, Sendable {
    case khr = "VK_KHR_cooperative_matrix"
    case nv = "VK_NV_cooperative_matrix"
    /// Tests only: the intrinsics modelled in plain GLSL (`COOPMAT_EMULATE`), so a device
    /// without cooperative matrices runs the rest of the kernel.
    case emulated = "emulated intrinsics, tests only"
  }
  public var flavour: Flavour
  public var m: Int, n: Int, k: Int

  public init(flavour: Flavour, m: Int, n: Int, k: Int) {
    self.flavour = flavour; self.m = m; self.n = n; self.k = k
  }

  public var description: String { "\(m)×\(n)×\(k) f16·f16→f32 (\(flavour.rawValue))" }

  /// The kernel's tiling: 2 × 2 subgroups of 32 × 32 outputs, 32 k per shared-memory step.
  /// A shape fits when its sides divide those (and are ≥ 8, for 16-byte aligned loads).
  var fitsKernel: Bool {
    [m, n, k].allSatisfy { $0 >= 8 && 32 % $0 == 0 }
  }
}

/// What a device offers for cooperative matrices and what the backend does with it.
public struct CooperativeMatrixSupport: Sendable {
  /// Every f16 × f16 → f32 subgroup shape the device lists, in its order of preference.
  public var offered: [CooperativeMatrixShape] = []
  /// The shape f16 × f16 products run on, or nil (then `note` says why).
  public var chosen: CooperativeMatrixShape?
  /// Why none was chosen ("" when one was).
  public var note = ""

  public init() {}
}

/// Flavour preference, the device queries and the compile probe.
enum CooperativeMatrixProbe {
  /// Component type and scope values shared by the KHR and NV enums.
  static let float16: Int32 = 0, float32: Int32 = 1, subgroupScope: Int32 = 3

  /// Queries `physical`'s shapes for each exposed extension and picks one (`choose`).
  static func probe(instance: VkInstance, physical: VkPhysicalDevice, extensions: Set<String>,
                    float16 hasFloat16: Bool, fixedSubgroup: Bool) -> CooperativeMatrixSupport {
    let exposed = extensions.contains(CooperativeMatrixShape.Flavour.khr.rawValue)
      || extensions.contains(CooperativeMatrixShape.Flavour.nv.rawValue)
    let khr = extensions.contains(CooperativeMatrixShape.Flavour.khr.rawValue)
      ? khrShapes(instance, physical) : []
    let nv = extensions.contains(CooperativeMatrixShape.Flavour.nv.rawValue)
      ? nvShapes(instance, physical) : []
    return choose(exposed: exposed, khr: khr, nv: nv, float16: hasFloat16, fixedSubgroup: fixedSubgroup,
                  compileError: compileError)
  }

  /// The selection rule: KHR first when the run-time glslang compiles
  /// `GL_KHR_cooperative_matrix` for it, else NV; 16×16×16 when offered, else the largest
  /// tile that fits the kernel. `float16` and `fixedSubgroup` are the kernel's requirements
  /// (f16 arithmetic; exactly 4 subgroups per workgroup). The note says why none was chosen.
  static func choose(exposed: Bool, khr: [CooperativeMatrixShape], nv: [CooperativeMatrixShape],
                     float16 hasFloat16: Bool, fixedSubgroup: Bool,
                     compileError: (CooperativeMatrixShape.Flavour) -> String?) -> CooperativeMatrixSupport {
    var support = CooperativeMatrixSupport()
    support.offered = khr + nv
    guard !support.offered.isEmpty else {
      support.note = exposed ? "the device lists no f16·f16→f32 subgroup shape"
        : "the device exposes neither VK_KHR_cooperative_matrix nor VK_NV_cooperative_matrix"
      return support
    }
    guard hasFloat16 else { support.note = "the device lacks shaderFloat16"; return support }
    guard fixedSubgroup else {
      support.note = "the device varies its subgroup size (the kernel needs exactly 4 subgroups per workgroup)"
      return support
    }
    var notes: [String] = []
    for (flavour, shapes) in [(CooperativeMatrixShape.Flavour.khr, khr), (.nv, nv)] where !shapes.isEmpty {
      let usable = shapes.filter(\.fitsKernel)
      guard let shape = usable.first(where: { $0.m == 16 && $0.n == 16 && $0.k == 16 })
              ?? usable.max(by: { $0.m * $0.n < $1.m * $1.n }) else {
        notes.append("no \(flavour.rawValue) shape fits the kernel's 32×32 subgroup tiles")
        continue
      }
      if let error = compileError(flavour) {
        notes.append("the run-time glslang cannot compile \(flavour == .khr ? "GL_KHR" : "GL_NV")"
          + "_cooperative_matrix (\(error))")
        continue
      }
      support.chosen = shape
      return support
    }
    support.note = notes.joined(separator: "; ")
    return support
  }

  /// The compiler's first error line for matmul_coopmat.comp in `flavour`, or nil when it
  /// compiles (cached: glslang does not change while the process runs).
  static func compileError(_ flavour: CooperativeMatrixShape.Flavour) -> String? {
    flavour == .khr ? khrCompileError : nvCompileError
  }
  private static let khrCompileError = tryCompile(.khr)
  private static let nvCompileError = tryCompile(.nv)

  private static func tryCompile(_ flavour: CooperativeMatrixShape.Flavour) -> String? {
    do {
      let source = try ShaderCompiler.preprocess("matmul_coopmat.comp",
                                                 defines: MatmulVariant.coopmatDefines(flavour))
      _ = try ShaderCompiler.compile(source, name: "matmul_coopmat.comp")
      return nil
    } catch {
      let text = "\(error)"
      return text.split(separator: "\n").first { $0.contains("ERROR") }.map(String.init)
        ?? String(text.prefix(200))
    }
  }

  private static func usable(a: Int32, b: Int32, c: Int32, result: Int32, scope: Int32) -> Bool {
    a == float16 && b == float16 && c == float32 && result == float32 && scope == subgroupScope
  }

  private static func khrShapes(_ instance: VkInstance, _ physical: VkPhysicalDevice) -> [CooperativeMatrixShape] {
    guard let raw = vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR") else {
      return []
    }
    let query = unsafeBitCast(raw, to: PFN_vkfGetPhysicalDeviceCooperativeMatrixPropertiesKHR.self)
    var count: UInt32 = 0
    guard query(physical, &count, nil) == VK_SUCCESS, count > 0 else { return [] }
    var blank = VkfCooperativeMatrixPropertiesKHR()
    blank.sType = VkStructureType(rawValue: UInt32(VKF_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR))
    var list = [VkfCooperativeMatrixPropertiesKHR](repeating: blank, count: Int(count))
    guard query(physical, &count, &list) == VK_SUCCESS else { return [] }
    return list.prefix(Int(count)).filter {
      $0.saturatingAccumulation == 0
        && usable(a: $0.AType, b: $0.BType, c: $0.CType, result: $0.ResultType, scope: $0.scope)
    }.map { CooperativeMatrixShape(flavour: .khr, m: Int($0.MSize), n: Int($0.NSize), k: Int($0.KSize)) }
  }

  private static func nvShapes(_ instance: VkInstance, _ physical: VkPhysicalDevice) -> [CooperativeMatrixShape] {
    guard let raw = vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV") else {
      return []
    }
    let query = unsafeBitCast(raw, to: PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV.self)
    var count: UInt32 = 0
    guard query(physical, &count, nil) == VK_SUCCESS, count > 0 else { return [] }
    var blank = VkCooperativeMatrixPropertiesNV()
    blank.sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV
    var list = [VkCooperativeMatrixPropertiesNV](repeating: blank, count: Int(count))
    guard query(physical, &count, &list) == VK_SUCCESS else { return [] }
    return list.prefix(Int(count)).filter {
      usable(a: Int32($0.AType.rawValue), b: Int32($0.BType.rawValue), c: Int32($0.CType.rawValue),
             result: Int32($0.DType.rawValue), scope: Int32($0.scope.rawValue))
    }.map { CooperativeMatrixShape(flavour: .nv, m: Int($0.MSize), n: Int($0.NSize), k: Int($0.KSize)) }
  }
}

// MARK: - Selection and dispatch

extension MatmulVariant {
  /// `VKF_MATMUL_COOPMAT=0` keeps f16 × f16 products on matmul.comp (A/B comparisons).
  static let coopmatAllowed = ProcessInfo.processInfo.environment["VKF_MATMUL_COOPMAT"] != "0"

  /// Defines of matmul_coopmat.comp for a flavour (transposes per product; the emulation
  /// needs the device's subgroup size).
  static func coopmatDefines(_ flavour: CooperativeMatrixShape.Flavour, transposeA: Bool = false,
                             transposeB: Bool = false, subgroupSize: Int = 32) -> [String: String] {
    var d = ["COOPMAT_KHR": flavour == .khr ? "1" : "0", "TRANS_A": transposeA ? "1" : "0",
             "TRANS_B": transposeB ? "1" : "0", "A_TYPE": "1", "B_TYPE": "1"]
    if flavour == .emulated { d["COOPMAT_EMULATE"] = "1"; d["EMU_SUBGROUP"] = "\(subgroupSize)" }
    return d
  }
}

/// Tiling of matmul_coopmat.comp for a chosen shape and subgroup size.
struct CoopmatTiling {
  let shape: CooperativeMatrixShape
  let subgroupSize: Int
  /// Accumulators per subgroup along m and n (32 × 32 outputs per subgroup), k per step.
  var cm: Int { 32 / shape.m }
  var cn: Int { 32 / shape.n }
  static let bk = 32
  /// Output rows and columns per workgroup (2 × 2 subgroups).
  var bm: Int { 2 * cm * shape.m }
  var bn: Int { 2 * cn * shape.n }

  /// Shared memory the kernel declares: the staged tiles (padded rows) and 4 scratch accumulators.
  var sharedBytes: Int {
    4 * (bm * (Self.bk / 2 + 4) + Self.bk * (bn / 2 + 4) + 4 * shape.m * shape.n)
  }

  /// IDs 0…2 workgroup size (4 subgroups), 3…5 lM lN lK, 6 CM, 7 CN, 8 BK.
  var specialization: [UInt32] {
    [4 * subgroupSize, 1, 1, shape.m, shape.n, shape.k, cm, cn, Self.bk].map { UInt32($0) }
  }
}

extension VulkanBackend {
  /// Tests set this to an `.emulated` shape so f16 × f16 products run matmul_coopmat.comp
  /// with modelled intrinsics on a device without cooperative matrices; nil in production.
  nonisolated(unsafe) static var coopmatEmulation: CooperativeMatrixShape?

  /// The cooperative-matrix tiling f16 × f16 products use on this device, or nil (no shape
  /// chosen, disabled by `VKF_MATMUL_COOPMAT=0`, or the tiles exceed shared memory).
  var coopmatTiling: CoopmatTiling? {
    if let shape = Self.coopmatEmulation {
      return CoopmatTiling(shape: shape, subgroupSize: capabilities.subgroupSize)
    }
    guard MatmulVariant.coopmatAllowed, let shape = capabilities.cooperativeMatrix.chosen else { return nil }
    let t = CoopmatTiling(shape: shape, subgroupSize: capabilities.subgroupSize)
    guard t.sharedBytes <= capabilities.maxSharedMemoryBytes,
          4 * capabilities.subgroupSize <= capabilities.maxWorkgroupInvocations else { return nil }
    return t
  }

  /// Whether a product with these operand types runs on matmul_coopmat.comp here.
  public func usesCooperativeMatrix(a: DType, b: DType) -> Bool {
    a == .f16 && b == .f16 && coopmatTiling != nil
  }

  /// One dispatch of matmul_coopmat.comp (both operands f16; shapes checked by the caller).
  func matmulCoopmat(_ t: CoopmatTiling, bindings: [Tensor], push: MatmulPush, g: GemmShape,
                     transposeA: Bool, transposeB: Bool) throws {
    let limits = gridLimits
    let groups = (min((g.n + t.bn - 1) / t.bn, limits.0), min((g.m + t.bm - 1) / t.bm, limits.1),
                  min(g.batch, limits.2))
    try dispatch("matmul_coopmat",
                 defines: MatmulVariant.coopmatDefines(t.shape.flavour, transposeA: transposeA,
                                                       transposeB: transposeB, subgroupSize: t.subgroupSize),
                 specialization: t.specialization, bindings: bindings, push: push, groups: groups)
  }
}
