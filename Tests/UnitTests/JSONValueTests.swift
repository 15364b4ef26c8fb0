import Foundation
import ProdReadyCore
import Testing

@Suite("JSONValue text: escaping and round trips, no servers")
struct JSONValueTests {
    @Test("strings with quotes, backslashes, every control character and multi-byte UTF-8 are written as valid JSON and read back unchanged",
          arguments: ["plain", "quote \" and backslash \\", "line\nfeed\rreturn\ttab", String((0..<0x20).map { Character(Unicode.Scalar($0)!) }), "é 中文 🧪 \u{7f}", ""])
    func escaping(_ text: String) throws {
        let document: JSONValue = ["key \"\\\n": .string(text), "list": [.string(text)]]
        let written = document.text
        // Foundation's parser as the independent judge of validity.
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(written.utf8)) as? [String: Any], "\(written)")
        #expect(parsed["key \"\\\n"] as? String == text, "\(written)")
        #expect(try JSONValue.parse(Array(written.utf8)) == document)
        #expect(!written.utf8.contains { $0 < 0x20 }, "a raw control byte in \(written.debugDescription)")
    }

    @Test("control characters without a short escape are written as \\u00XX in lower-case hex")
    func unicodeEscapes() {
        #expect(JSONValue.string("\u{01}\u{1f}\u{08}").text == #""\u0001\u001f\u0008""#)
        #expect(JSONValue.string("a\"b").text == #""a\"b""#)
    }
}
