import ArgumentParser
import Foundation
import OMSChaos
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPerformance
import ProdReadyService

/// `prodready bench oms`: the OMS driven over HTTP on a private embedded stack.
struct OMSBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "oms",
        abstract: "Measure the OMS: command accepted → converged (graph FULL) at a steady rate, and the sustained rate through the whole pipeline.",
        discussion: """
        Boots a private stack (postgres, kafka, redis, s3) and the OMS's four processes, then: (1) sends creates at \
        --rate per second for --seconds, open loop, and records each POST's latency and the time from its 202 until \
        the graph shows the instance FULL (instances go 25 to a class and the graph of each class with pending \
        instances is polled every 50 ms, so convergence times are up to 50 ms late); (2) sends --burst creates \
        with --concurrency in flight as fast as the API takes them and measures the rate from the first send until \
        the last one converged. Prints percentiles next to the targets of \
        SPEC-oms and each process's peak resident memory. Everything is torn down afterwards.
        """
    )

    @OptionGroup var options: CommonOptions
    @Option(help: "Commands per second in the steady phase.") var rate: Int = 100
    @Option(help: "Length of the steady phase in seconds.") var seconds: Int = 20
    @Option(help: "Commands in the burst phase.") var burst: Int = 3000
    @Option(help: "Requests in flight during the burst.") var concurrency: Int = 32

    func run() async throws {
        do {
            try validateRanges([("--rate", rate, 1...5_000), ("--seconds", seconds, 1...3_600), ("--burst", burst, 1...200_000), ("--concurrency", concurrency, 1...512)])
        } catch {
            throw fail(error)
        }
        let missed: Bool
        do {
            missed = try await withPrivateOMSDeployment(home: options.resolvedHome, label: "bench-oms") { deployment in
                try await measure(try await deployment.client(tenant: "bench"), services: deployment.services)
            }
        } catch {
            throw fail(error)
        }
        // Like every benchmark: a missed target is a failing exit status.
        if missed { throw ExitCode(1) }
    }

    /// Instances per class. The graph is read per class, so a poll costs the same at the end of a run as at its
    /// start: reading one class of thousands of nodes every 50 ms would load the API more than the commands do.
    static let instancesPerClass = 25

    /// Returns whether any measurement missed its target.
    private func measure(_ client: ServiceClient, services: StackServices) async throws -> Bool {
        let database = "bench"
        try await OMSCommands.complete(client, "POST", "/api/v1/database/create", ["name": .string(database)])
        let total = rate * seconds
        let steadyClasses = ClassBuckets(prefix: "Steady", count: total, perClass: Self.instancesPerClass)
        let burstClasses = ClassBuckets(prefix: "Burst", count: burst, perClass: Self.instancesPerClass)
        progress("creating \(steadyClasses.names.count + burstClasses.names.count) classes of \(Self.instancesPerClass) instances each")
        try await OMSClasses.create(client, database: database, names: steadyClasses.names + burstClasses.names)
        let validator = PerformanceValidator()
        let clock = ContinuousClock()

        // 1. Steady rate, open loop.
        progress("steady phase: \(total) creates at \(rate)/s")
        let tracker = ConvergenceTracker()
        var post = await validator.newMeasurement("OMS POST create (API latency alone, \(rate)/s)", thresholds: [])
        var converge = await validator.newMeasurement("OMS command accepted -> graph FULL at \(rate) commands/s", thresholds: [.latency(percentile: 95, atMost: .milliseconds(500))])
        let poller = Task { await tracker.poll(client, database: database, until: total) }
        let began = clock.now
        let postLatencies = try await withThrowingTaskGroup(of: Duration?.self) { group in
            for index in 0..<total {
                let due = began + .milliseconds(Int64(index) * 1000 / Int64(rate))
                try await clock.sleep(until: due)
                let className = steadyClasses.name(of: index)
                group.addTask {
                    let sent = clock.now
                    // A request that times out or is refused is counted, not fatal: the figures say how many.
                    guard let answer = try? await client.request("POST", "/api/v1/instances/\(database)/async/\(className)/create", json: ["data": ["name": .string("steady \(index)")], "instance_id": .string("s\(index)")], timeout: .seconds(30)),
                        answer.status == 202
                    else { await tracker.refused(); return nil }
                    let accepted = clock.now
                    await tracker.accepted("s\(index)", className: className, at: accepted)
                    return accepted - sent
                }
            }
            var latencies: [Duration] = []
            for try await latency in group { if let latency { latencies.append(latency) } }
            return latencies
        }
        post.elapsed = clock.now - began
        postLatencies.forEach { post.record(latency: $0) }
        try await tracker.wait(until: total, timeout: .seconds(120))
        poller.cancel()
        let steady = await tracker.latencies
        converge.elapsed = post.elapsed
        steady.forEach { converge.record(latency: $0) }
        await validator.add(post)
        await validator.add(converge)
        let refused = await tracker.refusals
        print("steady phase: \(total - refused) of \(total) accepted (\(refused) refused or timed out after 30 s), \(steady.count) converged")

        // 2. Burst: as fast as the API takes them, until the last one converged.
        progress("burst phase: \(burst) creates, \(concurrency) in flight")
        let burstTracker = ConvergenceTracker()
        let burstPoller = Task { await burstTracker.poll(client, database: database, until: burst, interval: .milliseconds(200)) }
        let burstBegan = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var index = worker
                    while index < burst {
                        let className = burstClasses.name(of: index)
                        let answer = try? await client.request("POST", "/api/v1/instances/\(database)/async/\(className)/create", json: ["data": ["name": .string("burst \(index)")], "instance_id": .string("b\(index)")], timeout: .seconds(30))
                        if answer?.status == 202 { await burstTracker.accepted("b\(index)", className: className, at: clock.now) } else { await burstTracker.refused() }
                        index += concurrency
                    }
                }
            }
            try await group.waitForAll()
        }
        let acceptedAll = clock.now - burstBegan
        try await burstTracker.wait(until: burst, timeout: .seconds(300))
        burstPoller.cancel()
        var sustained = await validator.newMeasurement("OMS sustained rate, \(burst) commands accepted -> graph FULL", thresholds: [.throughput(atLeast: 1_000)])
        sustained.elapsed = await burstTracker.lastConverged.map { $0 - burstBegan } ?? (clock.now - burstBegan)
        sustained.record(operations: await burstTracker.latencies.count)
        await validator.add(sustained)
        print("burst: \(await burstTracker.refusals) refused or timed out; \(burst) sent in \(format(acceptedAll.milliseconds)) ms (\(format(Double(burst) / (acceptedAll.milliseconds / 1000))) commands/s through the API alone)")
        for record in await services.records() {
            print("peak resident memory of \(record.name): \(record.identity.flatMap { peakResidentMegabytes(pid: $0.pid) }.map { format($0) + " MB" } ?? "unknown")  (goal < 150 MB)")
        }
        return !(await validator.summarize()).isEmpty
    }

    private func format(_ value: Double) -> String { String(Int(value.rounded())) }
}

/// Which class the `index`-th instance of a phase goes to: `<prefix><index / perClass>`.
struct ClassBuckets: Sendable {
    var prefix: String
    var perClass: Int
    var names: [String]

    init(prefix: String, count: Int, perClass: Int) {
        self.prefix = prefix
        self.perClass = perClass
        names = (0..<((count + perClass - 1) / perClass)).map { "\(prefix)\($0)" }
    }

    func name(of index: Int) -> String { "\(prefix)\(index / perClass)" }
}

/// When each accepted command was acknowledged and when the graph first showed it FULL.
actor ConvergenceTracker {
    private var acceptedAt: [String: ContinuousClock.Instant] = [:]
    /// Accepted, not yet seen FULL, per class: the only classes a poll reads.
    private var pending: [String: Set<String>] = [:]
    private var converged: Set<String> = []
    private(set) var latencies: [Duration] = []
    private(set) var refusals = 0
    private(set) var lastConverged: ContinuousClock.Instant?

    func accepted(_ id: String, className: String, at instant: ContinuousClock.Instant) {
        acceptedAt[id] = instant
        pending[className, default: []].insert(id)
    }
    func refused() { refusals += 1 }

    func observe(full ids: [String], className: String, at instant: ContinuousClock.Instant) {
        for id in ids where !converged.contains(id) {
            guard let accepted = acceptedAt[id] else { continue }
            converged.insert(id)
            pending[className]?.remove(id)
            latencies.append(instant - accepted)
            lastConverged = instant
        }
        if pending[className]?.isEmpty == true { pending[className] = nil }
    }

    var done: Int { converged.count }
    var pendingClasses: [String] { pending.keys.sorted() }

    /// Reads the graph of every class with pending instances (4 at a time) every `interval`.
    func poll(_ client: ServiceClient, database: String, until count: Int, interval: Duration = .milliseconds(50)) async {
        let clock = ContinuousClock()
        while !Task.isCancelled && done < count {
            await withTaskGroup(of: Void.self) { group in
                for (index, className) in pendingClasses.enumerated() {
                    if index >= 4 { await group.next() }
                    group.addTask {
                        guard let nodes = try? await client.get("/api/v1/graph/\(database)?class=\(className)").data?["nodes"]?.arrayValue else { return }
                        let full = nodes.filter { $0["data_status"] == "FULL" }.compactMap { $0["id"]?.stringValue }
                        await self.observe(full: full, className: className, at: clock.now)
                    }
                }
            }
            try? await Task.sleep(for: interval)
        }
    }

    func wait(until count: Int, timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while done < min(count, acceptedAt.count) {
            guard clock.now < deadline else {
                throw ProdReadyError(.timeout, "\(acceptedAt.count - done) of \(acceptedAt.count) accepted commands had not converged after \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// VmHWM of a process in MB, from /proc.
func peakResidentMegabytes(pid: Int32) -> Double? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return nil }
    return kilobytes / 1024
}
