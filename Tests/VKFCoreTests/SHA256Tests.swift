// SHA-256 against FIPS 180-4's published digests, across the padding boundaries (55, 56 and
// 64 bytes) and fed in uneven pieces.
import XCTest
import VKFCore

final class SHA256Tests: XCTestCase {
  func test_knownDigests() {
    XCTAssertEqual(SHA256.hex([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    XCTAssertEqual(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    XCTAssertEqual(SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000)),
                   "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
  }

  func test_piecewiseUpdates_equalOneShot() {
    let bytes = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 37) }
    for split in [0, 1, 55, 56, 63, 64, 65, 200] {
      var h = SHA256()
      h.update(bytes[..<split])
      h.update(bytes[split...])
      XCTAssertEqual(h.finish(), { var o = SHA256(); o.update(bytes); return o.finish() }(), "split at \(split)")
    }
  }
}
