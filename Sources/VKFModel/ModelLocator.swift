import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where `--model` points, once resolved.
public enum ModelLocation: Equatable, Sendable {
  /// A Hugging Face model directory with `config.json` and safetensors weights.
  case huggingFaceDirectory(URL)
  /// A single GGUF file.
  case gguf(URL)

  /// The directory or file.
  public var url: URL {
    switch self {
    case .huggingFaceDirectory(let url), .gguf(let url): return url
    }
  }

  /// Same kind and same standardized path (a directory URL's trailing slash is ignored).
  public static func == (a: ModelLocation, b: ModelLocation) -> Bool {
    switch (a, b) {
    case (.huggingFaceDirectory, .huggingFaceDirectory), (.gguf, .gguf):
      return a.url.standardizedFileURL.path == b.url.standardizedFileURL.path
    default:
      return false
    }
  }
}

/// Turns a `--model` argument into a model directory or GGUF file.
///
/// Accepted, in this order: an existing directory (with `config.json` and weights, or with
/// exactly one `.gguf` file), an existing `.gguf` file, or a Hugging Face repo id
/// (`org/name`, or `name`) already downloaded to the local Hugging Face cache. Nothing is
/// downloaded. The cache is found as `huggingface_hub` finds it: `$HF_HUB_CACHE`, else
/// `$HUGGINGFACE_HUB_CACHE` (legacy), else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
public enum ModelLocator {
  /// Resolves `argument`. `environment` overrides the process environment (tests); nil reads it.
  public static func resolve(_ argument: String, environment: [String: String]? = nil) throws -> ModelLocation {
    let env: (String) -> String? = { key in
      if let environment { return environment[key] }
      return getenv(key).map { String(cString: $0) }
    }
    let path = expandTilde(argument, home: env("HOME"))
    let fm = FileManager.default
    var isDirectory: ObjCBool = false
    if fm.fileExists(atPath: path, isDirectory: &isDirectory) {
      let url = URL(fileURLWithPath: path)
      if isDirectory.boolValue { return try checkDirectory(url, argument: argument) }
      if path.lowercased().hasSuffix(".gguf") { return .gguf(url) }
      if isPickle(url.lastPathComponent) { throw ModelFileError(path, pickleAdvice) }
      throw ModelFileError(path, "--model must be a model directory (config.json + *.safetensors), "
        + "a .gguf file or a Hugging Face repo id; for a .safetensors file pass its directory")
    }

    guard let repo = repoID(argument) else {
      throw ModelFileError(argument, "no such file or directory (looked for \(path)); --model takes a "
        + "model directory, a .gguf file or a Hugging Face repo id like org/name")
    }
    let cache = cacheRoot(env)
    let repoDirectory = cache.appendingPathComponent("models--" + repo.replacingOccurrences(of: "/", with: "--"))
    var tried = [path]
    if let snapshot = snapshot(in: repoDirectory, tried: &tried) {
      return try checkDirectory(snapshot, argument: argument)
    }
    throw ModelFileError(argument, "not found: tried \(tried.joined(separator: ", ")) (Hugging Face "
      + "cache \(cache.path)); download it with `huggingface-cli download \(repo)`, set HF_HUB_CACHE "
      + "or HF_HOME, or pass a local path")
  }

  // MARK: - Directories

  /// Whether `name` is a PyTorch pickle checkpoint (`pytorch_model.bin`, shards, `.pt`, `.pth`,
  /// `.ckpt`), which vkfinetune never reads.
  static func isPickle(_ name: String) -> Bool {
    let lower = name.lowercased()
    return [".bin", ".pt", ".pth", ".ckpt", ".pkl"].contains { lower.hasSuffix($0) }
  }

  /// Why pickles are refused and what to do instead.
  static let pickleAdvice = "pickle files can run arbitrary code when loaded, so vkfinetune does not read them; "
    + "download the model's .safetensors files, or convert once in a trusted Python with "
    + "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)"

  /// A directory must hold config.json and safetensors weights, or exactly one .gguf file.
  static func checkDirectory(_ url: URL, argument: String) throws -> ModelLocation {
    let fm = FileManager.default
    let hasConfig = fm.fileExists(atPath: url.appendingPathComponent("config.json").path)
    if hasConfig && SafetensorsCheckpoint.hasWeights(in: url) { return .huggingFaceDirectory(url) }
    let ggufs = ((try? fm.contentsOfDirectory(atPath: url.path)) ?? [])
      .filter { $0.lowercased().hasSuffix(".gguf") }.sorted()
    if ggufs.count == 1 { return .gguf(url.appendingPathComponent(ggufs[0])) }
    if ggufs.count > 1 {
      throw ModelFileError(url.path, "holds several .gguf files (\(ggufs.joined(separator: ", "))); "
        + "pass the one you want as --model")
    }
    let pickles = ((try? fm.contentsOfDirectory(atPath: url.path)) ?? []).filter(isPickle).sorted()
    if hasConfig, !pickles.isEmpty {
      throw ModelFileError(url.path, "holds only PyTorch pickle weights (\(pickles.joined(separator: ", "))): "
        + pickleAdvice)
    }
    let missing = hasConfig
      ? "has config.json but no weights (looked for \(SafetensorsCheckpoint.singleFileName), "
        + "\(SafetensorsCheckpoint.indexFileName), *.safetensors)"
      : "has no config.json (and no .gguf file)"
    throw ModelFileError(url.path, "is not a usable model directory: it \(missing); download the "
      + "complete model or point --model at a directory that has it")
  }

  // MARK: - Hugging Face cache

  /// The hub cache directory, chosen from the environment as `huggingface_hub` does.
  static func cacheRoot(_ env: (String) -> String?) -> URL {
    func nonEmpty(_ key: String) -> String? { env(key).flatMap { $0.isEmpty ? nil : $0 } }
    let home = env("HOME")
    if let hub = nonEmpty("HF_HUB_CACHE") ?? nonEmpty("HUGGINGFACE_HUB_CACHE") {
      return URL(fileURLWithPath: expandTilde(hub, home: home))
    }
    if let hfHome = nonEmpty("HF_HOME") {
      return URL(fileURLWithPath: expandTilde(hfHome, home: home)).appendingPathComponent("hub")
    }
    let xdg = nonEmpty("XDG_CACHE_HOME").map { expandTilde($0, home: home) }
      ?? (home ?? NSHomeDirectory()) + "/.cache"
    return URL(fileURLWithPath: xdg).appendingPathComponent("huggingface/hub")
  }

  /// The snapshot directory to use: the one `refs/main` names if it exists, else the most
  /// recently modified snapshot. Appends each path it looks at to `tried`.
  static func snapshot(in repoDirectory: URL, tried: inout [String]) -> URL? {
    let fm = FileManager.default
    let snapshots = repoDirectory.appendingPathComponent("snapshots")
    let ref = repoDirectory.appendingPathComponent("refs/main")
    tried.append(ref.path)
    if let text = try? String(contentsOf: ref, encoding: .utf8) {
      let revision = text.trimmingCharacters(in: .whitespacesAndNewlines)
      let named = snapshots.appendingPathComponent(revision)
      tried.append(named.path)
      var isDirectory: ObjCBool = false
      // A revision is a commit hash: one plain name inside snapshots/, never a path out of it.
      let plain = !revision.isEmpty && !revision.contains("/") && revision != "." && revision != ".."
      if plain, fm.fileExists(atPath: named.path, isDirectory: &isDirectory), isDirectory.boolValue {
        return named
      }
    }
    tried.append(snapshots.path + "/*")
    let names = (try? fm.contentsOfDirectory(atPath: snapshots.path)) ?? []
    let dated: [(URL, Date)] = names.compactMap { name in
      let url = snapshots.appendingPathComponent(name)
      guard let attributes = try? fm.attributesOfItem(atPath: url.path),
            attributes[.type] as? FileAttributeType == .typeDirectory else { return nil }
      return (url, attributes[.modificationDate] as? Date ?? .distantPast)
    }
    // Newest first; ties broken by name so the choice is deterministic.
    return dated.max { ($0.1, $0.0.lastPathComponent) < ($1.1, $1.0.lastPathComponent) }?.0
  }

  /// `org/name` or `name` made of the characters Hugging Face allows in repo ids; nil for
  /// anything that looks like a path.
  static func repoID(_ s: String) -> String? {
    let parts = s.split(separator: "/", omittingEmptySubsequences: false)
    guard (1...2).contains(parts.count) else { return nil }
    let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    for part in parts {
      guard !part.isEmpty, part != ".", part != "..", !part.hasPrefix("."),
            part.allSatisfy(allowed.contains) else { return nil }
    }
    if parts.count == 1 && s.lowercased().hasSuffix(".gguf") { return nil }
    return s
  }

  /// Expands a leading `~` or `~/`.
  static func expandTilde(_ path: String, home: String?) -> String {
    guard path == "~" || path.hasPrefix("~/") else { return path }
    return (home ?? NSHomeDirectory()) + path.dropFirst()
  }
}
