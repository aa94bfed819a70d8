import Foundation

/// 64-bit FNV-1a, a stable hash for cache keys (Foundation has no SHA on Linux).
struct FNV1a64 {
  private(set) var value: UInt64

  init(seed: UInt64 = 0xCBF2_9CE4_8422_2325) { value = seed }

  mutating func combine(_ s: String) {
    for b in s.utf8 { value = (value ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    value = (value ^ 0xFF) &* 0x0000_0100_0000_01B3  // Separator, so "ab"+"c" ≠ "a"+"bc".
  }
}

/// SPIR-V binaries on disk, keyed by a 128-bit hash (two FNV-1a 64 streams with different
/// seeds) of the preprocessed source and the driver identity. Any unreadable or malformed
/// entry is ignored and recompiled; a failed write is ignored too: the cache only saves time.
final class SPIRVCache: @unchecked Sendable {
  /// nil: the cache is off.
  let directory: URL?
  private let lock = NSLock()
  private var _hits = 0, _compiles = 0

  /// Number of shaders served from disk.
  var hits: Int { lock.lock(); defer { lock.unlock() }; return _hits }
  /// Number of shaders compiled with glslang.
  var compiles: Int { lock.lock(); defer { lock.unlock() }; return _compiles }

  init(directory: URL?) { self.directory = directory }

  /// `$VKF_SHADER_CACHE` (`off` disables), else `$XDG_CACHE_HOME/vkfinetune/spirv`, else
  /// `~/.cache/vkfinetune/spirv`.
  static func defaultDirectory(environment env: [String: String] = ProcessInfo.processInfo.environment) -> URL? {
    if let v = env["VKF_SHADER_CACHE"], !v.isEmpty {
      return v.lowercased() == "off" ? nil : URL(fileURLWithPath: v)
    }
    if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty {
      return URL(fileURLWithPath: xdg).appendingPathComponent("vkfinetune/spirv")
    }
    guard let home = env["HOME"], !home.isEmpty else { return nil }
    return URL(fileURLWithPath: home).appendingPathComponent(".cache/vkfinetune/spirv")
  }

  /// The cache key of a preprocessed source for one driver.
  static func key(source: String, driverIdentity: String) -> String {
    var a = FNV1a64(), b = FNV1a64(seed: 0x84222325CBF29CE4)
    for h in [driverIdentity, source] { a.combine(h); b.combine(h) }
    b.combine("vkf-spirv-v1")
    return String(a.value, radix: 16) + String(b.value, radix: 16)
  }

  /// SPIR-V for `source`, from disk when cached, else compiled by `compile` and stored.
  func spirv(source: String, driverIdentity: String, compile: () throws -> [UInt32]) throws -> [UInt32] {
    let file = directory?.appendingPathComponent(Self.key(source: source, driverIdentity: driverIdentity) + ".spv")
    if let file, let words = Self.read(file) {
      lock.lock(); _hits += 1; lock.unlock()
      return words
    }
    let words = try compile()
    lock.lock(); _compiles += 1; lock.unlock()
    if let file { Self.write(words, to: file) }
    return words
  }

  /// A valid SPIR-V module's words, or nil (missing, unreadable, truncated, wrong magic).
  static func read(_ file: URL) -> [UInt32]? {
    guard let data = try? Data(contentsOf: file), data.count >= 20, data.count % 4 == 0 else {
      return nil
    }
    let words = data.withUnsafeBytes { raw in
      (0..<(data.count / 4)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self) }
    }
    return words.first == 0x0723_0203 ? words : nil
  }

  /// Writes via a temporary file and rename, so readers never see a partial entry.
  static func write(_ words: [UInt32], to file: URL) {
    let fm = FileManager.default
    let dir = file.deletingLastPathComponent()
    try? fm.createDirectory(at: dir, withIntermediateDirectories: true)
    let tmp = dir.appendingPathComponent(".\(file.lastPathComponent).\(getpid()).\(UInt64.random(in: 0...UInt64.max)).tmp")
    let data = words.withUnsafeBytes { Data($0) }
    do {
      try data.write(to: tmp)
      if rename(tmp.path, file.path) != 0 { try? fm.removeItem(at: tmp) }
    } catch {
      try? fm.removeItem(at: tmp)
    }
  }
}
