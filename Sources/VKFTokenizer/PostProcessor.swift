// tokenizer.json post-processors: TemplateProcessing, Roberta/Bert, ByteLevel, Sequence.
import Foundation

/// Adds special tokens around an encoded sequence (e.g. Llama's `<s>` BOS).
indirect enum PostProcessor: Sendable {
  /// One template item: a special token's ids, or the sequence itself.
  enum Item: Sendable, Equatable {
    case special([Int])
    case sequence
  }

  case template(single: [Item])
  /// ByteLevel only adjusts offsets; ids are unchanged.
  case identity
  case sequence([PostProcessor])

  /// Parses a `post_processor` object.
  init(json: JSONObject) throws {
    let type = try json.type()
    switch type {
    case "TemplateProcessing":
      let specials = try json.optionalObject("special_tokens")
      var single: [Item] = []
      guard let items = json.value("single") as? [Any] else { throw json.missing("single", "an array") }
      for (i, raw) in items.enumerated() {
        guard let d = raw as? [String: Any] else { throw json.missing("single[\(i)]", "an object") }
        let item = JSONObject(raw: d, path: "\(json.path).single[\(i)]")
        if try item.optionalObject("Sequence") != nil {
          single.append(.sequence)
        } else if let sp = try item.optionalObject("SpecialToken") {
          let name = try sp.string("id")
          guard let entry = try specials?.optionalObject(name),
                let ids = entry.value("ids") as? [NSNumber] else {
            throw TokenizerError.malformed(field: "\(json.path).special_tokens",
                                           reason: "template names '\(name)' but special_tokens has no ids for it")
          }
          single.append(.special(ids.map(\.intValue)))
        } else {
          throw item.missing("Sequence|SpecialToken", "a template piece")
        }
      }
      self = .template(single: single)
    case "RobertaProcessing", "BertProcessing":
      let cls = try Self.pairID(json, "cls"), sep = try Self.pairID(json, "sep")
      self = .template(single: [.special([cls]), .sequence, .special([sep])])
    case "ByteLevel":
      self = .identity
    case "Sequence":
      self = .sequence(try json.objects("processors").map(PostProcessor.init(json:)))
    default:
      throw TokenizerError.unsupported(component: "post_processor", type: type)
    }
  }

  /// Reads Bert/Roberta's `["[CLS]", 101]` pairs.
  private static func pairID(_ json: JSONObject, _ key: String) throws -> Int {
    guard let pair = json.value(key) as? [Any], pair.count == 2, let n = pair[1] as? NSNumber else {
      throw json.missing(key, "a [token, id] pair")
    }
    return n.intValue
  }

  /// The ids of a single sequence with the special tokens added.
  func apply(_ ids: [Int]) -> [Int] {
    switch self {
    case .template(let single):
      var out: [Int] = []
      out.reserveCapacity(ids.count + single.count)
      for item in single {
        switch item {
        case .special(let s): out.append(contentsOf: s)
        case .sequence: out.append(contentsOf: ids)
        }
      }
      return out
    case .identity:
      return ids
    case .sequence(let list):
      return list.reduce(ids) { $1.apply($0) }
    }
  }
}
