// GPT-2's byte ↔ printable-character table used by ByteLevel pre-tokenizers and decoders.

/// GPT-2 byte-level mapping: every byte becomes a printable scalar so BPE never sees raw
/// whitespace or control bytes (`bytes_to_unicode` in openai/gpt-2 encoder.py).
enum ByteLevel {
  /// `byteToScalar[b]` is the printable stand-in for byte `b`.
  static let byteToScalar: [Unicode.Scalar] = {
    var table = [Unicode.Scalar](repeating: " ", count: 256)
    var n: UInt32 = 0
    for b in 0..<256 {
      let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
      if printable {
        table[b] = Unicode.Scalar(UInt8(b))
      } else {
        table[b] = Unicode.Scalar(256 + n) ?? " "
        n += 1
      }
    }
    return table
  }()

  /// Inverse of `byteToScalar`.
  static let scalarToByte: [UInt32: UInt8] = {
    var map: [UInt32: UInt8] = [:]
    for (b, s) in byteToScalar.enumerated() { map[s.value] = UInt8(b) }
    return map
  }()

  /// Maps the UTF-8 bytes of `s` to their printable stand-ins.
  static func encode(_ s: String) -> String {
    var out = String.UnicodeScalarView()
    for b in s.utf8 { out.append(byteToScalar[Int(b)]) }
    return String(out)
  }

  /// The bytes `token` stands for, or nil if some scalar is not in the table
  /// (HF then uses the token's own UTF-8 bytes).
  static func decodeBytes(_ token: String) -> [UInt8]? {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(token.unicodeScalars.count)
    for c in token.unicodeScalars {
      guard let b = scalarToByte[c.value] else { return nil }
      bytes.append(b)
    }
    return bytes
  }
}
