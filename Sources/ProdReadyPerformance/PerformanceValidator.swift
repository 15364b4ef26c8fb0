public import Histogram
import Foundation
import ProdReadyCore

/// A limit a measurement must stay within.
public enum PerformanceThreshold: Sendable, CustomStringConvertible {
    /// The given percentile (0–100) of the recorded latencies must be at most `limit`.
    case latency(percentile: Double, atMost: Duration)
    /// Operations per second over the measured interval must be at least `perSecond`.
    case throughput(atLeast: Double)

    public var description: String {
        switch self {
        case .latency(let percentile, let limit): "p\(formatNumber(percentile)) <= \(formatMilliseconds(limit.milliseconds)) ms"
        case .throughput(let minimum): ">= \(formatNumber(minimum)) ops/s"
        }
    }
}

/// One named measurement: latencies recorded into an HdrHistogram plus an operation count over a duration.
public struct PerformanceMeasurement: Sendable {
    public let name: String
    public let thresholds: [PerformanceThreshold]
    public private(set) var histogram: Histogram<UInt64>
    public private(set) var operations: Int = 0
    public var elapsed: Duration = .zero

    init(name: String, thresholds: [PerformanceThreshold]) {
        self.name = name
        self.thresholds = thresholds
        // Microsecond resolution up to one hour, three significant digits.
        histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    }

    public mutating func record(latency: Duration) {
        let microseconds = UInt64(max(1, (latency.milliseconds * 1000).rounded()))
        _ = histogram.record(min(microseconds, 3_600_000_000))
        operations += 1
    }

    public mutating func record(operations count: Int) { operations += count }

    public func percentile(_ percentile: Double) -> Duration {
        .microseconds(Int64(histogram.valueAtPercentile(percentile)))
    }

    public var throughput: Double {
        let seconds = elapsed.milliseconds / 1000
        return seconds > 0 ? Double(operations) / seconds : 0
    }

    /// Each threshold with whether it held and the observed value.
    public func verdicts() -> [(threshold: PerformanceThreshold, observed: String, passed: Bool)] {
        thresholds.map { threshold in
            switch threshold {
            case .latency(let percentileValue, let limit):
                let observed = histogram.totalCount == 0 ? nil : percentile(percentileValue)
                return (threshold, observed.map { "\(formatMilliseconds($0.milliseconds)) ms" } ?? "no samples", observed.map { $0 <= limit } ?? false)
            case .throughput(let minimum):
                return (threshold, "\(formatNumber(throughput)) ops/s", throughput >= minimum)
            }
        }
    }

    /// One readable line: name, percentiles, throughput, and every threshold with its verdict.
    public var report: String {
        var parts = ["PERF \(name): n=\(operations)"]
        if histogram.totalCount > 0 {
            parts.append("p50=\(formatMilliseconds(percentile(50).milliseconds))ms p90=\(formatMilliseconds(percentile(90).milliseconds))ms p99=\(formatMilliseconds(percentile(99).milliseconds))ms max=\(formatMilliseconds(Double(histogram.max) / 1000))ms")
        }
        if elapsed > .zero { parts.append("throughput=\(formatNumber(throughput)) ops/s over \(formatMilliseconds(elapsed.milliseconds)) ms") }
        for verdict in verdicts() {
            parts.append("[\(verdict.passed ? "PASS" : "FAIL") \(verdict.threshold), observed \(verdict.observed)]")
        }
        return parts.joined(separator: " ")
    }

    public var passed: Bool { verdicts().allSatisfy(\.passed) }
}

/// Collects named measurements, prints one line per measurement and a summary, and says which failed.
public actor PerformanceValidator {
    public private(set) var measurements: [PerformanceMeasurement] = []
    private let output: @Sendable (String) -> Void

    public init(output: @escaping @Sendable (String) -> Void = { print($0) }) {
        self.output = output
    }

    /// Times `operations` runs of `body`, each latency recorded, total elapsed measured. Worker `w` of
    /// `concurrency` runs indices w, w + concurrency, …, on `executors[w]` when there is one.
    @discardableResult
    public func measure(
        _ name: String,
        thresholds: [PerformanceThreshold],
        operations: Int,
        concurrency: Int = 1,
        executors: [any TaskExecutor] = [],
        _ body: @escaping @Sendable (_ index: Int) async throws -> Void
    ) async throws -> PerformanceMeasurement {
        var measurement = PerformanceMeasurement(name: name, thresholds: thresholds)
        let clock = ContinuousClock()
        let began = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Duration].self) { group in
            let workers = max(1, concurrency)
            for worker in 0..<workers {
                group.addTask(executorPreference: worker < executors.count ? executors[worker] : nil) {
                    var local: [Duration] = []
                    var index = worker
                    while index < operations {
                        let start = clock.now
                        try await body(index)
                        local.append(clock.now - start)
                        index += workers
                    }
                    return local
                }
            }
            var all: [Duration] = []
            for try await part in group { all.append(contentsOf: part) }
            return all
        }
        measurement.elapsed = clock.now - began
        latencies.forEach { measurement.record(latency: $0) }
        return add(measurement)
    }

    /// Adds a measurement built elsewhere (e.g. from a benchmark loop).
    @discardableResult
    public func add(_ measurement: PerformanceMeasurement) -> PerformanceMeasurement {
        measurements.append(measurement)
        output(measurement.report)
        return measurement
    }

    public func newMeasurement(_ name: String, thresholds: [PerformanceThreshold]) -> PerformanceMeasurement {
        PerformanceMeasurement(name: name, thresholds: thresholds)
    }

    /// Prints the summary and returns the failed measurements' report lines (empty when all passed).
    @discardableResult
    public func summarize() -> [String] {
        let failed = measurements.filter { !$0.passed }
        output("PERF SUMMARY: \(measurements.count - failed.count)/\(measurements.count) measurements within their limits")
        return failed.map(\.report)
    }
}

func formatMilliseconds(_ value: Double) -> String {
    value >= 100 ? String(Int(value.rounded())) : String(format: "%.3f", value)
}

func formatNumber(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(format: "%.1f", value)
}
