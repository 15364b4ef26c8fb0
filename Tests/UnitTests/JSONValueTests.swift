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

/// The hand-written parser against Foundation's `JSONSerialization` as the independent judge: the same documents
/// accepted, the same refused, and nothing a hostile message can send makes it crash.
@Suite("JSON parsing without Foundation's decoder: what it accepts, what it refuses, no servers")
struct JSONParserTests {
    @Test("valid documents parse to the expected values",
          arguments: [
            (#"{"a":1,"b":[true,false,null],"c":"x","d":-0.5,"e":{}}"#, ["a": 1, "b": [true, false, .null], "c": "x", "d": -0.5, "e": [:]] as JSONValue),
            (" \n\t[ 1 , 2.0 , 3e2 , -4E-1 , 0 ]\r\n", [1, 2.0, 300.0, -0.4, 0] as JSONValue),
            (#""\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#, .string("\"\\/\u{08}\u{0C}\n\r\té😀")),
            (#""é 中文 🧪""#, .string("é 中文 🧪")),
            ("9223372036854775807", .int(Int.max)),
            ("9223372036854775808", .double(9223372036854775808.0)),
            (#"{"k":1,"k":2}"#, ["k": 2] as JSONValue),
            ("[]", [] as JSONValue),
          ] as [(String, JSONValue)])
    func valid(_ text: String, _ expected: JSONValue) throws {
        #expect(try JSONValue.parse(Array(text.utf8)) == expected)
        #expect((try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil, "Foundation refuses \(text) too")
    }

    @Test("invalid documents are refused with the byte offset, as Foundation refuses them",
          arguments: [
            "", " ", "{", "{\"a\" 1}", "{a:1}", "[1 2]", "01", "-", "1.", ".5", "1e", "+1", "tru", "nul", "\"abc", "\"a\u{01}b\"",
            #""\x""#, #""\u12""#, #""\ud83d""#, #""\ude00""#, #""\ud83d\u0041""#, "[1]]", "{} {}", "NaN", "Infinity", "'a'", "1e400",
          ])
    func invalid(_ text: String) {
        let error = #expect(throws: ProdReadyError.self) { try JSONValue.parse(Array(text.utf8)) }
        #expect(error?.message.contains("at byte") == true, "\(String(describing: error))")
        #expect((try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) == nil, "Foundation accepts \(text.debugDescription)")
    }

    @Test("a trailing comma is refused (RFC 8259), although Foundation's parser lets it through", arguments: ["[1,]", "{\"a\":1,}"])
    func trailingComma(_ text: String) {
        #expect(throws: ProdReadyError.self) { try JSONValue.parse(Array(text.utf8)) }
    }

    @Test("invalid UTF-8 inside a string is refused")
    func invalidUTF8() {
        for bytes: [UInt8] in [[0x22, 0xC3, 0x22], [0x22, 0xFF, 0x22], [0x22, 0x5C, 0x6E, 0xED, 0xA0, 0x80, 0x22]] {
            #expect(throws: ProdReadyError.self) { try JSONValue.parse(bytes) }
        }
    }

    @Test("100,000 nested arrays are refused at depth 513 instead of overflowing the stack; 512 are read")
    func nesting() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        let error = #expect(throws: ProdReadyError.self) { try JSONValue.parse(Array(deep.utf8)) }
        #expect(error?.message.contains("nested deeper than 512") == true, "\(String(describing: error))")
        let allowed = String(repeating: "[", count: 512) + String(repeating: "]", count: 512)
        _ = try JSONValue.parse(Array(allowed.utf8))
    }
}

/// `JSONValueDecoder` against Foundation's `JSONDecoder` on the same bytes: the same values, and errors that name
/// the same field.
@Suite("Decoding through JSONValue instead of JSONDecoder, no servers")
struct JSONValueDecoderTests {
    struct Inner: Codable, Equatable { var name: String; var count: Int64?; var ratio: Double }
    struct Outer: Codable, Equatable {
        var id: String
        var flag: Bool
        var tags: [String]
        var inner: Inner
        var list: [Inner]
        var extra: JSONValue?
        var small: UInt8
        var when: Date
    }

    static let decoder = JSONValueDecoder(date: { InternetTime.parse($0) })
    static var foundation: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = InternetTime.parse(text) else { throw DecodingError.dataCorruptedError(in: try decoder.singleValueContainer(), debugDescription: "bad date") }
            return date
        }
        return decoder
    }

    @Test("a nested document decodes to what JSONDecoder makes of it; a JSONValue member is kept as parsed")
    func sameValues() throws {
        let text = #"{"id":"e1","flag":true,"tags":["a","b"],"inner":{"name":"n","count":5,"ratio":2},"list":[{"name":"m","ratio":0.5}],"extra":{"before":{"x":[1,"y",null]}},"small":255,"when":"2026-12-04T01:02:03.456Z"}"#
        let ours = try Self.decoder.decode(Outer.self, from: Array(text.utf8))
        let theirs = try Self.foundation.decode(Outer.self, from: Data(text.utf8))
        #expect(ours == theirs)
        #expect(ours.extra == ["before": ["x": [1, "y", .null]]])
    }

    @Test("errors name the field as JSONDecoder's do: a missing key, a wrong type, a null, a number that does not fit",
          arguments: [
            (#"{"flag":true,"tags":[],"inner":{"name":"n","ratio":1},"list":[],"small":1,"when":"2026-12-04T01:02:03Z"}"#, "id"),
            (#"{"id":"e","flag":"yes","tags":[],"inner":{"name":"n","ratio":1},"list":[],"small":1,"when":"2026-12-04T01:02:03Z"}"#, "flag"),
            (#"{"id":"e","flag":true,"tags":[1],"inner":{"name":"n","ratio":1},"list":[],"small":1,"when":"2026-12-04T01:02:03Z"}"#, "tags.Index 0"),
            (#"{"id":"e","flag":true,"tags":[],"inner":{"name":null,"ratio":1},"list":[],"small":1,"when":"2026-12-04T01:02:03Z"}"#, "inner.name"),
            (#"{"id":"e","flag":true,"tags":[],"inner":{"name":"n","ratio":1},"list":[{"name":"m"}],"small":1,"when":"2026-12-04T01:02:03Z"}"#, "list.Index 0.ratio"),
            (#"{"id":"e","flag":true,"tags":[],"inner":{"name":"n","ratio":1},"list":[],"small":256,"when":"2026-12-04T01:02:03Z"}"#, "small"),
            (#"{"id":"e","flag":true,"tags":[],"inner":{"name":"n","ratio":1},"list":[],"small":1,"when":"yesterday"}"#, "when"),
          ] as [(String, String)])
    func errors(_ text: String, _ path: String) throws {
        func pathOf(_ error: any Error) -> String? {
            guard let error = error as? DecodingError else { return nil }
            let context: DecodingError.Context
            var keys: [String] = []
            switch error {
            case .keyNotFound(let key, let c): context = c; keys = [key.stringValue]
            case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): context = c
            @unknown default: return nil
            }
            return (context.codingPath.map(\.stringValue) + keys).joined(separator: ".")
        }
        let ours = #expect(throws: DecodingError.self) { try Self.decoder.decode(Outer.self, from: Array(text.utf8)) }
        let theirs = #expect(throws: DecodingError.self) { try Self.foundation.decode(Outer.self, from: Data(text.utf8)) }
        #expect(ours.flatMap(pathOf) == path, "\(String(describing: ours))")
        // JSONDecoder leaves the path empty for a number that does not fit (256 into UInt8); ours names it.
        if let their = theirs.flatMap(pathOf), !their.isEmpty { #expect(ours.flatMap(pathOf) == their, "JSONDecoder: \(String(describing: theirs))") }
    }
}
