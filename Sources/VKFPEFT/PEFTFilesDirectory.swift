import Foundation
import VKFModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a whole output directory all-or-nothing: the files are built in a hidden sibling
/// directory, which is then renamed onto the destination.
///
/// An existing non-empty destination is refused unless `overwrite` is set; then the old
/// directory is first renamed aside, the new one renamed in, and the old one deleted, so a
/// reader sees the old or the new directory, never a mixture (between the two renames the
/// name is briefly absent; a failure of the second rename puts the old directory back).
/// Any failure removes the temporary directory and leaves the destination untouched.
enum AtomicDirectory {
  /// Builds `destination` through `body`, which writes into the directory it is handed.
  static func write(to destination: URL, overwrite: Bool, what: String,
                    _ body: (URL) throws -> Void) throws {
    let fm = FileManager.default
    let dest = destination.standardizedFileURL
    let parent = dest.deletingLastPathComponent()
    var isDirectory: ObjCBool = false
    let exists = fm.fileExists(atPath: dest.path, isDirectory: &isDirectory)
    if exists {
      guard isDirectory.boolValue else {
        throw PEFTError("\(dest.path) exists and is not a directory; choose another output path for the \(what)")
      }
      let contents = (try? fm.contentsOfDirectory(atPath: dest.path)) ?? []
      if !contents.isEmpty && !overwrite {
        throw PEFTError("\(dest.path) already exists and is not empty; choose a new directory for the "
          + "\(what) or pass overwrite to replace it")
      }
    }
    guard fm.fileExists(atPath: parent.path, isDirectory: &isDirectory), isDirectory.boolValue else {
      throw PEFTError("cannot write the \(what) to \(dest.path): the parent directory \(parent.path) does not exist")
    }
    let suffix = String(getpid()) + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    let temp = parent.appendingPathComponent(AtomicWrite.temporaryPrefix + dest.lastPathComponent + "-" + suffix)
    do {
      try fm.createDirectory(at: temp, withIntermediateDirectories: false)
    } catch {
      throw PEFTError("cannot create a temporary directory in \(parent.path) for the \(what): "
        + "\(error.localizedDescription); check that it is writable")
    }
    do {
      try body(temp)
    } catch {
      try? fm.removeItem(at: temp)
      throw error
    }
    if !exists {
      guard rename(temp.path, dest.path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? fm.removeItem(at: temp)
        throw PEFTError("cannot rename the finished \(what) onto \(dest.path): \(reason)")
      }
      return
    }
    // Replace an existing (empty, or overwritable) directory.
    let aside = parent.appendingPathComponent(AtomicWrite.temporaryPrefix + dest.lastPathComponent + "-old-" + suffix)
    guard rename(dest.path, aside.path) == 0 else {
      let reason = String(cString: strerror(errno))
      try? fm.removeItem(at: temp)
      throw PEFTError("cannot move the existing \(dest.path) aside to replace it: \(reason)")
    }
    guard rename(temp.path, dest.path) == 0 else {
      let reason = String(cString: strerror(errno))
      _ = rename(aside.path, dest.path)
      try? fm.removeItem(at: temp)
      throw PEFTError("cannot rename the finished \(what) onto \(dest.path): \(reason) (the old directory was kept)")
    }
    try? fm.removeItem(at: aside)
  }

  /// Writes `data` to `url` (inside a directory being built, so no rename is needed for
  /// atomicity; `AtomicWrite` still makes a crash leave no half file).
  static func writeFile(_ data: Data, to url: URL) throws {
    try AtomicWrite.write([UInt8](data), to: url)
  }

  /// JSON text as Python's `json.dumps(obj, indent=2, sort_keys=True)` writes it (how
  /// peft and transformers save configs), with a trailing newline.
  static func jsonData(_ object: Any) throws -> Data {
    var out = ""
    try appendJSON(object, indent: 0, to: &out)
    return Data((out + "\n").utf8)
  }

  /// Appends `value` (dictionary, array, string, number, bool, NSNull) as indented JSON.
  private static func appendJSON(_ value: Any, indent: Int, to out: inout String) throws {
    let pad = String(repeating: " ", count: indent + 2), close = String(repeating: " ", count: indent)
    switch value {
    case is NSNull:
      out += "null"
    case let s as String:
      out += jsonString(s)
    case let n as NSNumber:
      switch String(cString: n.objCType) {
      case "c": out += n.boolValue ? "true" : "false"
      case "f", "d":
        let d = n.doubleValue
        guard d.isFinite else { throw PEFTError("internal: cannot write the non-finite number \(d) to JSON") }
        out += "\(d)"
      default: out += "\(n.int64Value)"
      }
    case let dict as [String: Any]:
      if dict.isEmpty { out += "{}"; return }
      out += "{\n"
      for (i, key) in dict.keys.sorted().enumerated() {
        out += pad + jsonString(key) + ": "
        try appendJSON(dict[key] ?? NSNull(), indent: indent + 2, to: &out)
        out += i + 1 < dict.count ? ",\n" : "\n"
      }
      out += close + "}"
    case let list as [Any]:
      if list.isEmpty { out += "[]"; return }
      out += "[\n"
      for (i, item) in list.enumerated() {
        out += pad
        try appendJSON(item, indent: indent + 2, to: &out)
        out += i + 1 < list.count ? ",\n" : "\n"
      }
      out += close + "]"
    default:
      throw PEFTError("internal: cannot write a \(type(of: value)) to JSON")
    }
  }

  /// `s` as a JSON string literal, non-ASCII kept as UTF-8 (`ensure_ascii=False`).
  static func jsonString(_ s: String) -> String { SafetensorsWriter.jsonString(s) }
}
