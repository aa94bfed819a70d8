/// JSON string literals for every file the project writes (safetensors headers, PEFT and
/// Hugging Face configs) and for chat templates' `tojson`.
public enum JSONLiteral {
  /// `s` as a JSON string literal exactly as Python's `json.dumps` writes it (and serde_json
  /// with `asciiOnly` false): `"` `\` and the short escapes, other control characters as
  /// lowercase `\u00xx`; with `asciiOnly`, non-ASCII as `\uXXXX` (surrogate pairs past
  /// U+FFFF), else raw UTF-8.
  public static func string(_ s: String, asciiOnly ascii: Bool = false) -> String {
    var out = "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      default:
        if u.value < 0x20 { out += String(format: "\\u%04x", u.value) }
        else if ascii, u.value > 0x7e {
          if u.value > 0xFFFF {
            let v = u.value - 0x10000
            out += String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
          } else { out += String(format: "\\u%04x", u.value) }
        } else { out.unicodeScalars.append(u) }
      }
    }
    return out + "\""
  }
}
