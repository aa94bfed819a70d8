#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COpenBLAS

/// Which OpenBLAS kernels this process runs, and how to get the fastest ones.
///
/// Debian's OpenBLAS 0.3.21 does not know Zen 5 and falls back to its AVX2 ("Haswell")
/// kernels, ~250 GFLOP/s on 2 threads; with `OPENBLAS_CORETYPE=SKYLAKEX` it uses the
/// AVX-512 ones, ~468. OpenBLAS reads the variable in its library constructor, before
/// `main`, so setting it takes a re-exec of the process.
public enum OpenBLASCore {
  /// The kernel family OpenBLAS chose, e.g. "Haswell" or "SkylakeX".
  public static var coreName: String {
    guard let p = openblas_get_corename() else { return "unknown" }
    return String(cString: p)
  }

  /// Threads OpenBLAS runs a large product on.
  public static var threadCount: Int { Int(openblas_get_num_threads()) }

  /// Flags /proc/cpuinfo must list for the SkylakeX (AVX-512) kernels.
  static let avx512Flags: Set<Substring> = ["avx512f", "avx512dq", "avx512bw", "avx512vl"]

  /// Kernel families that already use the AVX-512 sgemm kernels (lower-cased core names).
  static let avx512Cores: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]

  /// "SKYLAKEX" when the CPU has AVX-512 F/DQ/BW/VL, `OPENBLAS_CORETYPE` is unset and
  /// OpenBLAS did not already pick an AVX-512 family (Intel parts it knows are detected
  /// correctly; re-executing them would only cost a process start). nil otherwise.
  public static func recommendedCoreType() -> String? {
    guard getenv("OPENBLAS_CORETYPE") == nil, !avx512Cores.contains(coreName.lowercased()),
          let flags = cpuFlags() else { return nil }
    return avx512Flags.isSubset(of: flags) ? "SKYLAKEX" : nil
  }

  /// For the CLI's first line: re-executes the process with `OPENBLAS_CORETYPE` set when a
  /// better kernel family exists. `VKF_NO_REEXEC` (set here too) prevents a loop and lets a
  /// user opt out. Returns only when nothing needs doing or `execv` failed.
  public static func reexecWithBestKernelsIfNeeded() {
    guard getenv("VKF_NO_REEXEC") == nil, let core = recommendedCoreType() else { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv("VKF_NO_REEXEC", "1", 1)
    _ = execv("/proc/self/exe", CommandLine.unsafeArgv)
    // execv failed (no /proc, seccomp, …): carry on with the kernels already loaded.
  }

  /// The `flags` line of the first processor in /proc/cpuinfo, split into words.
  static func cpuFlags() -> Set<Substring>? {
    guard let f = fopen("/proc/cpuinfo", "r") else { return nil }
    defer { fclose(f) }
    var line: UnsafeMutablePointer<CChar>? = nil
    var cap = 0
    defer { free(line) }
    while getline(&line, &cap, f) > 0 {
      guard let l = line else { break }
      let s = String(cString: l)
      guard s.hasPrefix("flags"), let colon = s.firstIndex(of: ":") else { continue }
      return Set(s[s.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }))
    }
    return nil
  }
}
