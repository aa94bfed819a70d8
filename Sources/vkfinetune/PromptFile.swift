import Foundation
import VKFTokenizer

/// A prompts file (JSONL, or a JSON array of objects): each record a `"prompt"` string (or
/// TRL's conversational `"prompt"` / `"messages"` list of {role, content}) plus any other
/// fields, which `generate --prompts` writes back and GRPO's reward functions read.
enum PromptFile {
  /// A record's prompt: plain text, or chat messages for the chat template.
  enum Prompt {
    case text(String)
    case messages([ChatMessage])
  }

  struct Record {
    /// 1-based line (JSONL) or element (JSON array) number, for errors.
    var line: Int
    var prompt: Prompt
    /// Every field of the record, the prompt's included.
    var fields: [String: Any]

    /// The other fields as text (numbers and booleans as JSON writes them), for rewards.
    var textFields: [String: String] {
      var out: [String: String] = [:]
      for (k, v) in fields where k != "prompt" && k != "messages" {
        switch v {
        case let s as String: out[k] = s
        default:
          if let d = try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .fragmentsAllowed]) {
            out[k] = String(decoding: d, as: UTF8.self)
          }
        }
      }
      return out
    }
  }

  /// The records of `path`; `flag` names the file's setting in errors.
  static func read(_ path: String, flag: String) throws -> [Record] {
    let data: Data
    do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
      throw RecipeError("\(flag) \(path): cannot read it (\(error.localizedDescription))")
    }
    var objects: [(Int, Any?)] = []
    let trimmed = data.first { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }
    if trimmed == UInt8(ascii: "[") {
      guard let array = try? JSONSerialization.jsonObject(with: data) as? [Any] else {
        throw RecipeError("\(path): not a JSON array of records")
      }
      objects = array.enumerated().map { ($0 + 1, $1) }
    } else {
      for (i, raw) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = raw.trimmingCharacters(in: .whitespaces)
        guard !line.isEmpty else { continue }
        objects.append((i + 1, try? JSONSerialization.jsonObject(with: Data(line.utf8))))
      }
    }
    var records: [Record] = []
    for (n, object) in objects {
      let at = "\(path) line \(n)"
      guard let fields = object as? [String: Any] else { throw RecipeError("\(at): not a JSON object") }
      let prompt: Prompt
      if let text = fields["prompt"] as? String {
        prompt = .text(text)
      } else if let list = (fields["prompt"] ?? fields["messages"]) as? [Any] {
        var messages: [ChatMessage] = []
        for (k, m) in list.enumerated() {
          guard let m = m as? [String: Any], let role = m["role"] as? String, let content = m["content"] as? String else {
            throw RecipeError("\(at): messages[\(k)] needs a \"role\" and a \"content\" string")
          }
          messages.append(ChatMessage(role: role, content: content))
        }
        prompt = .messages(messages)
      } else {
        throw RecipeError("\(at): no \"prompt\" string or \"messages\" list")
      }
      records.append(Record(line: n, prompt: prompt, fields: fields))
    }
    guard !records.isEmpty else { throw RecipeError("\(flag) \(path): no prompts (the file is empty)") }
    return records
  }
}
