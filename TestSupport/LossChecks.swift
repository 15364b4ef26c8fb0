public import ProdReadyVerification
public import Testing

/// Fails the current test unless `report` converged with nothing lost, duplicated or unexpected; the failure
/// names the ids of each set and how long the check waited. Prints the report either way, so a passing run
/// shows its figures too.
public func expectNoLoss(_ report: LossReport, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    print("⚖️  \(what): \(report)")
    if !report.passed {
        Issue.record("\(what): \(report)", sourceLocation: sourceLocation)
    }
}

/// Reads effects with `observe` until every operation `ledger` saw acknowledged has one, then fails the test
/// (with ids) if anything was lost, duplicated or unexpected. Returns the report for further checks.
@discardableResult
public func expectConverged(
    _ what: String,
    ledger: OperationLedger,
    exactlyOnce: Bool = true,
    since: ContinuousClock.Instant? = nil,
    timeout: Duration = .seconds(30),
    interval: Duration = .milliseconds(100),
    sourceLocation: SourceLocation = #_sourceLocation,
    observe: @Sendable () async throws -> [String]
) async throws -> LossReport {
    let report = try await LossAccounting.converge(
        ledger, exactlyOnce: exactlyOnce, since: since, timeout: timeout, interval: interval, observe: observe)
    expectNoLoss(report, what, sourceLocation: sourceLocation)
    return report
}
