import Foundation
import ProdReadyCore
import Testing

@Suite("RFC 3339 timestamps without ISO8601DateFormatter")
struct InternetTimeTests {
    @Test("formats UTC with milliseconds, rounded to the nearest, including before 1970 and on leap days", arguments: [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_796_312_211.4879, "2026-12-03T15:36:51.488Z"),
        (951_782_400.5, "2000-02-29T00:00:00.500Z"),
        (-0.001, "1969-12-31T23:59:59.999Z"),
        (-86_400.25, "1969-12-30T23:59:59.750Z"),
        (253_402_300_799.5, "9999-12-31T23:59:59.500Z"),
    ])
    func formats(seconds: Double, expected: String) {
        #expect(InternetTime.format(Date(timeIntervalSince1970: seconds)) == expected)
    }

    @Test("agrees with Foundation's ISO8601DateFormatter over 2,000 instants spread across four centuries")
    func agreesWithFoundation() throws {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var random = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            // Whole milliseconds as a Double are a hair off (1.001 is 1.000999…): both sides must round, not truncate,
            // or a decoded timestamp would be written back 1 ms earlier.
            let milliseconds = Int64.random(in: -6_000_000_000_000...10_000_000_000_000, using: &random)
            let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
            let ours = InternetTime.format(date)
            #expect(ours == formatter.string(from: date), "\(milliseconds) ms")
            let parsed = try #require(InternetTime.parse(ours), "\(ours)")
            #expect(abs(parsed.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000_5, "\(ours)")
        }
    }

    @Test("parses offsets, fractions of any length, lower-case separators and a space for T", arguments: [
        ("2026-12-03T15:36:51Z", 1_796_312_211.0),
        ("2026-12-03T15:36:51.5Z", 1_796_312_211.5),
        ("2026-12-03T16:36:51.123456+01:00", 1_796_312_211.123456),
        ("2026-12-03T10:06:51-05:30", 1_796_312_211.0),
        ("2026-12-03t15:36:51z", 1_796_312_211.0),
        ("2026-12-03 15:36:51Z", 1_796_312_211.0),
        ("2024-02-29T00:00:00Z", 1_709_164_800.0),
    ])
    func parses(text: String, seconds: Double) throws {
        let date = try #require(InternetTime.parse(text))
        #expect(abs(date.timeIntervalSince1970 - seconds) < 0.000_001)
    }

    @Test("refuses what is not an RFC 3339 time", arguments: [
        "", "2026-12-03", "2026-12-03T15:36:51", "2026-12-03T15:36:51.Z", "2026-13-03T15:36:51Z", "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z", "2026-12-03T24:00:00Z", "2026-12-03T15:60:00Z", "2026-12-03T15:36:51+0100", "2026-12-03T15:36:51Zjunk",
        "２026-12-03T15:36:51Z", "2026/12/03T15:36:51Z",
    ])
    func refuses(text: String) {
        #expect(InternetTime.parse(text) == nil, "\(text)")
    }
}
