import Foundation
import Logging
public import ProdReadyChaos
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import ProdReadyS3
import ProdReadyService
import ProdReadyVerification
import Synchronization

/// SPEC-oms item 4: with the publisher stopped, two updates of one instance (v1, v2) are accepted; v2's command
/// envelope, as the event store holds it, goes straight into `instance_commands` and is applied (`done`); then v1's
/// is skipped as stale (`skipped_stale`); once the publisher runs again (and publishes both once more) the
/// instance and its read-model document show v2.
public enum OMSOutOfOrder {
    public static func run(on target: OMSChaosTarget) async throws -> OMSChaosOutcome {
        let workload = OMSWorkload(label: "out-of-order")
        try await workload.prepare(target.oms)
        let database = workload.database, classID = workload.classID, instance = "ooo"
        let base = "/api/v1/instances/\(database)/async/\(classID)/\(instance)"
        let ledger = workload.ledger
        var violations: [String] = []

        let created = try await target.oms.request("POST", "/api/v1/instances/\(database)/async/\(classID)/create", json: ["data": ["name": "v0"], "instance_id": .string(instance)])
        guard created.status == 202, let createCommand = created.data?["command_id"]?.stringValue else { throw ProdReadyError(.protocolError, "create answered \(created.status)") }
        ledger.acknowledged("create")
        try await OMSCommands.waitForStatus(target.oms, command: createCommand, timeout: .seconds(60))

        try await target.control.stopProcess(OMSProcesses.publisher)
        target.log.note("out-of-order: publisher stopped")
        let began = ContinuousClock().now
        let v1: String, v2: String
        do {
            v1 = try await update(target, base, expected: 1, name: "v1")
            v2 = try await update(target, base, expected: 2, name: "v2")
            ledger.acknowledged("v2")
            // v1 is superseded by v2 before it is applied: its data must never show.
            ledger.refused("v1")
            let producer = try KafkaProducer(configuration: .embedded(bootstrapServers: target.kafkaServers))
            try await inject(target, producer, command: v2, aggregate: "\(database):\(classID):\(instance)")
            if let status = try await registryStatus(target, database, v2, becomes: "done") { violations.append("v2 injected first ended \(status), not done") }
            try await inject(target, producer, command: v1, aggregate: "\(database):\(classID):\(instance)")
            if let status = try await registryStatus(target, database, v1, becomes: "skipped_stale") { violations.append("v1 injected after v2 ended \(status), not skipped_stale") }
            target.log.note("out-of-order: v2 done, v1 skipped_stale")
        } catch {
            try? await target.control.startProcess(OMSProcesses.publisher, environment: [:], awaitReady: true)
            throw error
        }
        try await target.control.startProcess(OMSProcesses.publisher, environment: [:], awaitReady: true)
        let healed = ContinuousClock().now
        target.log.note("out-of-order: publisher started again")

        let report = try await LossAccounting.converge(ledger, since: healed, timeout: .seconds(60), interval: .milliseconds(250)) {
            try await observeVersions(target, database: database, classID: classID, instance: instance)
        }
        // Everything the publisher sent again was absorbed: v2 done at its first attempt, v1 still skipped.
        let rows = try await target.stores.processedEvents(handler: OMSProcesses.instanceWorker, database: database)
        if let row = rows[v2], row.status != "done" || row.attempts != 1 { violations.append("v2 after the publisher resent it: \(row.status) after \(row.attempts) attempts, not done after 1") }
        if let row = rows[v1], row.status != "skipped_stale" { violations.append("v1 after the publisher resent it: \(row.status), not skipped_stale") }
        let summary = ScenarioSummary(
            suite: "oms", scenario: "out-of-order", fault: "publisher stopped; v2 injected before v1", holdSeconds: Double((healed - began).components.seconds),
            acknowledgedDuringFault: 2, report: report, violations: violations)
        try ScenarioReport.record(summary)
        return OMSChaosOutcome(summary: summary, report: report)
    }

    static func update(_ target: OMSChaosTarget, _ base: String, expected: Int, name: String) async throws -> String {
        let answer = try await target.oms.request("PUT", "\(base)/update?expected_seq=\(expected)", json: ["data": ["name": .string(name)]])
        guard answer.status == 202, let command = answer.data?["command_id"]?.stringValue else {
            throw ProdReadyError(.protocolError, "update to \(name) answered \(answer.status): \(answer.body.map { "\($0)" } ?? "")")
        }
        return command
    }

    /// Sends `command`'s envelope, read from the event store, to the commands topic as the publisher would.
    static func inject(_ target: OMSChaosTarget, _ producer: KafkaProducer, command: String, aggregate: String) async throws {
        let store = target.stores
        let index = try await store.s3.getObject(bucket: store.bucket, key: "indexes/by-event-id/\(command).json")
        guard let key = try JSONValue.parse(index.body)["key"]?.stringValue else { throw ProdReadyError(.corruptState, "index entry of \(command) has no key") }
        let envelope = try await store.s3.getObject(bucket: store.bucket, key: key).body
        _ = try await producer.send(KafkaOutgoing(topic: target.commandsTopic, key: Array(aggregate.utf8), value: envelope, headers: [KafkaHeader("event_id", command)]))
        target.log.note("out-of-order: injected \(command) (\(key))")
    }

    /// Nil once the instance worker's row for `command` has `status`; otherwise the status it ended with.
    static func registryStatus(_ target: OMSChaosTarget, _ database: String, _ command: String, becomes status: String) async throws -> String? {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        var last = "no row"
        while clock.now < deadline {
            if let row = try await target.stores.processedEvents(handler: OMSProcesses.instanceWorker, database: database)[command] {
                if row.status == status { return nil }
                last = row.status
                if row.status == "done" || row.status == "skipped_stale" { return last }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return "\(last) after 30 s"
    }

    /// Effects: `create` once the instance exists, and the version its data and its document show (`v1`/`v2`).
    static func observeVersions(_ target: OMSChaosTarget, database: String, classID: String, instance: String) async throws -> [String] {
        var effects: [String] = []
        let row = try await target.oms.get("/api/v1/instance/\(database)/class/\(classID)/\(instance)")
        guard row.status == 200 else { return effects }
        effects.append("create")
        let written = row.data?["data"]?["name"]?.stringValue ?? row.data?["name"]?.stringValue
        let document = try await target.stores.redis.get("\(target.stores.redisPrefix)doc:\(database):\(classID):\(instance)")
        let projected = document.flatMap { try? JSONValue.parse($0) }?["data"]?["name"]?.stringValue
        // A version counts once both the write model and the read model show it.
        if let written, written == projected, written != "v0" { effects.append(written) }
        return effects
    }
}

/// SPEC-oms item 6: faults drawn with a seeded generator, each held, with creates flowing all the time; after each
/// fault everything acknowledged up to its end converges, counted. The schedule is printed with its seed first.
public enum OMSSoak {
    public static let faultKinds: [Fault.Action] = [
        .stopComponent(.kafka), .stopComponent(.redis), .stopComponent(.postgres), .stopComponent(.s3),
        .killProcess(OMSProcesses.publisher), .killProcess(OMSProcesses.instanceWorker), .restartProcess(OMSProcesses.projectionWorker),
        .pauseProcess(OMSProcesses.instanceWorker), .pauseProcess(OMSProcesses.projectionWorker),
    ]

    /// Enough faults for `seconds` however fast they converge: none lasts less than its hold. The run stops drawing
    /// from the schedule when the time is up. (At one fault per 6 s, the old count, a soak whose faults converged in
    /// about 5 s ran out of faults after 9 of its 10 minutes.) The schedule only grows with the time: the first
    /// faults of a seed stay the same.
    public static func schedule(seconds: Int, seed: UInt64, hold: Duration = .seconds(2)) -> FaultSchedule {
        let holdSeconds = max(1, Int(hold.components.seconds))
        return FaultSchedule.draw(seed: seed, count: max(1, seconds / holdSeconds), from: faultKinds, hold: hold)
    }

    /// One outcome per fault, then one for the whole soak.
    public static func run(on target: OMSChaosTarget, seconds: Int, seed: UInt64, rate: Int = 5, convergeTimeout: Duration = .seconds(120)) async throws -> [OMSChaosOutcome] {
        let plan = schedule(seconds: seconds, seed: seed)
        target.log.note("soak of \(seconds) s\n\(plan)")
        let workload = OMSWorkload(label: "soak", expectedCreates: seconds * rate * 3 / 2)
        try await workload.prepare(target.oms)
        let generator = LoadGenerator(ledger: workload.ledger, rate: rate, maxInFlight: 8) { await workload.send($0, target.oms) }
        generator.start()
        let clock = ContinuousClock()
        let end = clock.now + .seconds(seconds)
        var outcomes: [OMSChaosOutcome] = []
        do {
            try await OMSChaosScenario.waitForAcknowledgements(generator, atLeast: 3, what: "acknowledged creates before the first fault")
            for (number, fault) in plan.faults.enumerated() where clock.now < end {
                let window = try await target.injector.inject(fault)
                // Everything acknowledged until the fault ended must converge; what came later is judged after the next one.
                let cutoff = window.healed
                let fates = { @Sendable in workload.fates(acknowledgedBy: cutoff) }
                let report = try await LossAccounting.converge(fates: fates, since: window.healed, timeout: convergeTimeout, interval: .milliseconds(500)) {
                    let all = workload.ledger.snapshot
                    let judged = fates()
                    // Effects of creates acknowledged after the cutoff are neither expected nor unexpected yet.
                    return try await workload.observe(target).filter { judged[$0] != nil || all[$0] == nil }
                }
                await OMSChaosScenario.noteProcessWarnings(on: target, report)
                let summary = ScenarioSummary(
                    suite: "oms", scenario: "soak fault \(number + 1)", fault: fault.description, holdSeconds: Double(fault.hold.components.seconds), seed: seed,
                    acknowledgedDuringFault: generator.acknowledged(from: window.began, to: window.healed), report: report,
                    violations: try await workload.diagnoseLost(report, on: target))
                try ScenarioReport.record(summary)
                outcomes.append(OMSChaosOutcome(summary: summary, report: report))
            }
        } catch {
            await generator.stop()
            throw error
        }
        await generator.stop()
        let stopped = clock.now
        let report = try await workload.converge(target, since: stopped, timeout: convergeTimeout)
        if let absorbed = try? await workload.absorbedRepeats(target) { target.log.note("soak: \(absorbed)") }
        let summary = ScenarioSummary(
            suite: "oms", scenario: "soak", fault: "\(outcomes.count) faults over \(seconds) s", holdSeconds: 2, seed: seed,
            acknowledgedDuringFault: outcomes.map(\.summary.acknowledgedDuringFault).reduce(0, +), report: report,
            violations: outcomes.filter { !$0.summary.passed }.map { "\($0.summary.scenario) (\($0.summary.fault)) did not converge cleanly" }
                + (try await workload.diagnoseLost(report, on: target)))
        try ScenarioReport.record(summary)
        outcomes.append(OMSChaosOutcome(summary: summary, report: report))
        return outcomes
    }
}

/// What the soak's faults made the OMS repeat, and its deduplication absorbed: "duplicated 0" is about effects,
/// which the stores key by id; these counts show the repeats that were there to absorb.
struct AbsorbedRepeats: CustomStringConvertible {
    /// Event objects in the log beyond one per event id (an append retried after its index write failed).
    var logCopies: Int
    /// Handlings beyond the first, per worker (a redelivery after a crash, a lease taken over).
    var retries: [String: Int]

    var description: String {
        let handlings = retries.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        return "repeats absorbed by deduplication: \(logCopies) extra copies of events in the log; handlings retried: \(handlings)"
    }
}

extension OMSWorkload {
    /// Counts the repeats of this workload's database: copies in the S3 event log, retried handlings in the registry.
    func absorbedRepeats(_ target: OMSChaosTarget) async throws -> AbsorbedRepeats {
        let prefix = "events/\(database)/"
        let keys = try await target.stores.s3.listKeys(bucket: target.stores.bucket, prefix: prefix)
        // <20-digit sequence>-<event id>.json; tombstones close sequences and are no events.
        let ids = keys.compactMap { key -> Substring? in
            let name = key.dropFirst(prefix.count)
            guard name.count > 26, name.hasSuffix(".json") else { return nil }
            let id = name.dropFirst(21).dropLast(5)
            return id == "tombstone" ? nil : id
        }
        var retries: [String: Int] = [:]
        for handler in [OMSProcesses.instanceWorker, OMSProcesses.projectionWorker] {
            let rows = try await target.stores.processedEvents(handler: handler, database: database)
            retries[handler] = rows.values.reduce(0) { $0 + max(0, $1.attempts - 1) }
        }
        return AbsorbedRepeats(logCopies: ids.count - Set(ids).count, retries: retries)
    }

    /// The ledger as it stood for operations acknowledged by `cutoff`: acknowledged ones up to then, every refused
    /// and indeterminate one.
    func fates(acknowledgedBy cutoff: ContinuousClock.Instant) -> [String: OperationFate] {
        let early = Set(acknowledged(before: cutoff).keys)
        return ledger.snapshot.filter { $0.value != .acknowledged || early.contains($0.key) }
    }
}
