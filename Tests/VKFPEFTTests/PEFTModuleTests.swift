import XCTest
@testable import VKFPEFT

final class PEFTModuleTests: XCTestCase {
  func test_moduleLinks() { XCTAssertTrue(true) }
}
