import Foundation
import VKFCore
import Yams

/// Reads a recipe (`--config recipe.yaml`) into entries and resolves entries into settings.
enum RecipeFile {
  /// The top-level keys of `path`, each with its line; a bad file is one line naming the line.
  static func load(_ path: String) throws -> [RecipeEntry] {
    let text: String
    do {
      let data = try BoundedFile.read(URL(fileURLWithPath: path), BoundedFile.settings)
      guard let decoded = String(data: data, encoding: .utf8) else { throw RecipeError("the file is not UTF-8 text") }
      text = decoded
    } catch {
      throw RecipeError("--config: cannot read \(path) (\(Self.reason(error)))")
    }
    return try parse(text, file: path)
  }

  /// The top-level keys of a YAML document.
  static func parse(_ text: String, file: String) throws -> [RecipeEntry] {
    let name = URL(fileURLWithPath: file).lastPathComponent
    let node: Node?
    do { node = try Yams.compose(yaml: text) } catch let error as YamlError {
      throw RecipeError(describe(error, file: name))
    } catch {
      throw RecipeError("\(name): not valid YAML (\(error))")
    }
    guard let node else { return [] }  // an empty file sets nothing
    guard case let .mapping(mapping) = node else {
      throw RecipeError("\(name):\(node.mark?.line ?? 1): a recipe must be a mapping of keys to values (key: value)")
    }
    var entries: [RecipeEntry] = []
    for (k, v) in mapping {
      let line = k.mark?.line ?? 0
      guard case let .scalar(keyScalar) = k else {
        throw RecipeError("\(name):\(line): keys must be plain names")
      }
      entries.append(RecipeEntry(key: keyScalar.string, value: try value(v, file: name), origin: "\(name):\(line)"))
    }
    return entries
  }

  private static func value(_ node: Node, file: String) throws -> RecipeValue {
    switch node {
    case let .scalar(s):
      return s.style == .plain && node.null != nil ? .null : .scalar(s.string)
    case let .sequence(seq):
      return .list(try seq.map { try value($0, file: file) })
    case let .mapping(m):
      return .map(try m.map { k, v in (k.string ?? "", try value(v, file: file)) })
    case .alias:
      throw RecipeError("\(file):\(node.mark?.line ?? 0): YAML aliases are not supported in recipes; write the value out")
    }
  }

  /// One line from a Yams error: `file:line:column: problem`.
  private static func describe(_ error: YamlError, file: String) -> String {
    switch error {
    case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
         let .composer(context, problem, mark, _):
      let ctx = context.map { " (\($0.text) at line \($0.mark.line))" } ?? ""
      return "\(file):\(mark.line):\(mark.column): not valid YAML: \(problem)\(ctx)"
    case let .duplicatedKeysInMapping(duplicates, context):
      return "\(file):\(context.mark.line): key given twice: \(duplicates.sorted().joined(separator: ", "))"
    default:
      return "\(file): not valid YAML: \(String(describing: error).split(separator: "\n").first ?? "")"
    }
  }

  /// The line swift-argument-parser prints for `error`: a LocalizedError's description, else
  /// the error as text.
  static func message(_ error: Error) -> String {
    (error as? LocalizedError)?.errorDescription ?? String(describing: error)
  }

  static func reason(_ error: Error) -> String {
    (error as NSError).localizedFailureReason ?? (error as NSError).localizedDescription
  }

  // MARK: - Resolution

  /// The defaults, then `file`'s entries, then `flags`' (flags win). Unknown keys, keys given
  /// twice in one source and values of the wrong type are one-line errors.
  static func resolve(file: [RecipeEntry], flags: [RecipeEntry]) throws -> TrainSettings {
    var chosen: [String: RecipeEntry] = [:]
    for source in [file, flags] {
      var seen: [String: RecipeEntry] = [:]
      for entry in source {
        guard let key = RecipeKeys.byName[entry.key] else {
          if let why = RecipeKeys.unsupported[entry.key] {
            // `tf32: false` asks for nothing vkfinetune lacks.
            if (try? entry.bool()) == false || entry.value == .null { continue }
            throw RecipeError("\(entry.origin): \(entry.key) is not supported: \(why)")
          }
          let hint = RecipeKeys.suggestion(for: entry.key).map { " (did you mean \($0)?)" } ?? ""
          throw RecipeError("\(entry.origin): unknown key \"\(entry.key)\"\(hint)")
        }
        if let earlier = seen[key.name] {
          throw RecipeError("\(entry.origin): \(entry.key) sets \(key.name) again (already set by \(earlier.key) at "
            + "\(earlier.origin)); keep one")
        }
        seen[key.name] = entry
        if entry.value != .null { chosen[key.name] = entry }
      }
    }
    var settings = TrainSettings()
    // Table order, not file order: `load_in_4bit` then turns a `method: lora` into qlora whatever the order.
    for key in RecipeKeys.all {
      if let entry = chosen[key.name] { try key.apply(&settings, entry) }
    }
    return settings
  }
}
