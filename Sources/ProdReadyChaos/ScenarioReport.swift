import Foundation
import ProdReadyCore
public import ProdReadyVerification

/// One scenario's outcome, as the summary line and as one JSON line under `PRODREADY_REPORT_DIR`.
public struct ScenarioSummary: Sendable, Codable, Equatable {
    public var suite: String
    public var scenario: String
    /// The fault and its hold, e.g. "kafka down, held 6 s"; "none" for a scenario without one.
    public var fault: String
    public var holdSeconds: Double
    public var seed: UInt64?
    /// Operations acknowledged while the fault lasted, and in the whole scenario.
    public var acknowledgedDuringFault: Int
    public var acknowledged: Int
    public var refused: Int
    public var indeterminate: Int
    /// From the fault's end to the last acknowledged operation's effect; nil when it never converged.
    public var convergedAfterSeconds: Double?
    public var lost: [String]
    public var duplicated: [String]
    public var unexpected: [String]
    /// Scenario-specific checks that failed (e.g. "a command completed while Kafka was down").
    public var violations: [String]
    public var finishedAt: String

    public init(suite: String, scenario: String, fault: String, holdSeconds: Double, seed: UInt64? = nil, acknowledgedDuringFault: Int, report: LossReport, violations: [String]) {
        self.suite = suite
        self.scenario = scenario
        self.fault = fault
        self.holdSeconds = holdSeconds
        self.seed = seed
        self.acknowledgedDuringFault = acknowledgedDuringFault
        acknowledged = report.acknowledged
        refused = report.refused
        indeterminate = report.indeterminate
        convergedAfterSeconds = report.convergedAfter.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
        lost = report.lost
        duplicated = report.duplicated.keys.sorted()
        unexpected = report.unexpected
        self.violations = violations
        finishedAt = InternetTime.format(Date())
    }

    public var passed: Bool { convergedAfterSeconds != nil && lost.isEmpty && duplicated.isEmpty && unexpected.isEmpty && violations.isEmpty }

    /// `✅ oms chaos-lite kafka-down: kafka down, held 6 s; 30 acknowledged during it (112 in all); converged 2.31 s after; lost 0, duplicated 0, unexpected 0`
    public var line: String {
        let converged = convergedAfterSeconds.map { String(format: "converged %.2f s after", $0) } ?? "did NOT converge"
        func ids(_ list: [String]) -> String { list.isEmpty ? "0" : "\(list.count) \(list.prefix(10))" }
        var text = "\(passed ? "✅" : "❌") \(suite) \(scenario): \(fault); \(acknowledgedDuringFault) acknowledged during it (\(acknowledged) in all, \(refused) refused, \(indeterminate) indeterminate); \(converged); lost \(ids(lost)), duplicated \(ids(duplicated)), unexpected \(ids(unexpected))"
        if let seed { text += "; seed \(seed)" }
        if !violations.isEmpty { text += "; violations: " + violations.joined(separator: "; ") }
        return text
    }
}

/// Appends scenario summaries as JSON lines to `<PRODREADY_REPORT_DIR>/<suite>-chaos.jsonl` when the variable
/// is set; the consolidated report reads these files.
public enum ScenarioReport {
    public static let directoryVariable = "PRODREADY_REPORT_DIR"

    /// Prints the summary line and, with a report directory, appends the JSON line. Returns the file written.
    @discardableResult
    public static func record(_ summary: ScenarioSummary, environment: [String: String]? = nil, echo: (String) -> Void = { print($0) }) throws -> String? {
        echo(summary.line)
        let environment = environment ?? ProcessInfo.processInfo.environment
        guard let directory = environment[directoryVariable], !directory.isEmpty else { return nil }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = "\(directory)/\(summary.suite)-chaos.jsonl"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        var line = try encoder.encode(summary)
        line.append(0x0A)
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
        return path
    }
}
