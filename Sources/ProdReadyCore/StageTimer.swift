import Synchronization

/// Sums of how long each named step took, since the last reset: a worker logs them with a backlog it worked off, so
/// a slow convergence says whether the time went to the registry, the write model, the event store or elsewhere.
public final class StageTimer: Sendable {
    private struct Sum { var count = 0; var total: Duration = .zero; var longest: Duration = .zero }
    private let sums = Mutex<[String: Sum]>([:])
    private let clock = ContinuousClock()

    public init() {}

    public func time<T>(_ stage: String, _ body: () async throws -> T) async rethrows -> T {
        let began = clock.now
        defer {
            let took = clock.now - began
            sums.withLock { sums in
                sums[stage, default: Sum()].count += 1
                sums[stage]?.total += took
                if took > sums[stage]?.longest ?? .zero { sums[stage]?.longest = took }
            }
        }
        return try await body()
    }

    /// Forgets what was timed so far.
    public func reset() { sums.withLock { $0 = [:] } }

    /// What was timed since the last reset, a step a field: `claim=77x/2310ms/max 95ms`.
    public func summary() -> String {
        sums.withLock { sums in
            sums.sorted { $0.key < $1.key }.map { name, sum in
                "\(name)=\(sum.count)x/\(Int(sum.total.milliseconds))ms/max \(Int(sum.longest.milliseconds))ms"
            }.joined(separator: " ")
        }
    }
}
