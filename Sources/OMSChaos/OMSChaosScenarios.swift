import Foundation
public import ProdReadyChaos
public import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
public import ProdReadyService
public import ProdReadyVerification
import Synchronization

/// An OMS deployment a chaos run may break: its API (a client with an admin token of one tenant), its stores,
/// the control over its stack and processes, and where its commands topic is (for out-of-order injection).
public struct OMSChaosTarget: Sendable {
    public let oms: ServiceClient
    public let stores: OMSStores
    public let control: any ChaosControl
    public let kafkaServers: String
    public let commandsTopic: String
    /// The instance worker's consumer group (for the report of a lost command).
    public let instanceWorkerGroup: String
    public let log: ChaosLog

    public init(oms: ServiceClient, stores: OMSStores, control: any ChaosControl, kafkaServers: String, commandsTopic: String, instanceWorkerGroup: String, log: ChaosLog) {
        self.oms = oms
        self.stores = stores
        self.control = control
        self.kafkaServers = kafkaServers
        self.commandsTopic = commandsTopic
        self.instanceWorkerGroup = instanceWorkerGroup
        self.log = log
    }

    var injector: FaultInjector { FaultInjector(control: control, log: log) }
}

/// Where an OMS deployment that someone else started keeps its data: its settings' variables, else the defaults of
/// `prodready serve`. The suites' external mode and `prodready chaos --target external` read it alike.
public struct OMSDataLocation: Sendable, Equatable {
    public let schema: String
    public let bucket: String
    public let topicPrefix: String
    public let redisPrefix: String
    public let groupPrefix: String

    public init(environment: [String: String]) {
        func value(_ name: String, _ fallback: String) -> String { environment[name].flatMap { $0.isEmpty ? nil : $0 } ?? fallback }
        schema = value("OMS_SCHEMA", "oms")
        bucket = value("OMS_BUCKET", "oms-events")
        topicPrefix = value("OMS_TOPIC_PREFIX", "")
        redisPrefix = value("OMS_REDIS_PREFIX", "oms:")
        groupPrefix = value("OMS_GROUP_PREFIX", "")
    }
}

/// The OMS's process names, as `prodready serve` knows them.
public enum OMSProcesses {
    public static let api = "oms"
    public static let publisher = "oms-publisher"
    public static let instanceWorker = "oms-instance-worker"
    public static let projectionWorker = "oms-projection-worker"
    public static let all = [api, publisher, instanceWorker, projectionWorker]
    /// A second instance worker in the same consumer group (`prodready serve oms-instance-worker@2`).
    public static let instanceWorkerReplica = "oms-instance-worker@2"
}

/// SPEC-oms item 3, chaos-lite: one fault each, with commands flowing before, during and after it, then every
/// acknowledged command converging by all six checks with loss accounting.
public enum OMSChaosScenario: String, Sendable, CaseIterable {
    case kafkaDown = "kafka-down"
    case redisDown = "redis-down"
    case postgresDown = "postgres-down"
    case s3Down = "s3-down"
    case publisherKilled = "publisher-killed"
    case publisherAfterPublish = "publisher-after-publish"
    case instanceWorkerAfterClaim = "instance-worker-after-claim"
    case instanceWorkerPaused = "instance-worker-paused"
    case projectionWorkerPaused = "projection-worker-paused"
    case instanceWorkerTakeover = "instance-worker-takeover"

    /// The fault and its hold. Kafka is held past the 5 s within which nothing may complete; pauses past the
    /// workers' 5 s lease.
    public var fault: Fault {
        switch self {
        case .kafkaDown: Fault(.stopComponent(.kafka), hold: .seconds(7))
        case .redisDown: Fault(.stopComponent(.redis), hold: .seconds(6))
        case .postgresDown: Fault(.stopComponent(.postgres), hold: .seconds(5))
        case .s3Down: Fault(.stopComponent(.s3), hold: .seconds(5))
        case .publisherKilled: Fault(.killProcess(OMSProcesses.publisher), hold: .seconds(2))
        case .publisherAfterPublish: Fault(.crashPoint(process: OMSProcesses.publisher, point: "after_publish"), hold: .seconds(1))
        case .instanceWorkerAfterClaim: Fault(.crashPoint(process: OMSProcesses.instanceWorker, point: "after_claim"), hold: .seconds(1))
        case .instanceWorkerPaused: Fault(.pauseProcess(OMSProcesses.instanceWorker), hold: .seconds(7))
        case .projectionWorkerPaused: Fault(.pauseProcess(OMSProcesses.projectionWorker), hold: .seconds(7))
        // Past the group's 3 s session (the broker hands the paused worker's partitions to the replica) and the 5 s
        // lease (the replica may reclaim what the paused one held). On an idle machine the replica had the paused
        // worker's partitions and had applied their creates 6.4–6.9 s into the pause; 13 s leaves room for a busy one.
        case .instanceWorkerTakeover: Fault(.pauseProcess(OMSProcesses.instanceWorker), hold: .seconds(13))
        }
    }

    /// Processes the scenario needs besides the OMS's four.
    public var replicas: [String] {
        self == .instanceWorkerTakeover ? [OMSProcesses.instanceWorkerReplica] : []
    }
}

/// What a scenario came to: its summary line (also written to the report) and the full loss report.
public struct OMSChaosOutcome: Sendable {
    public var summary: ScenarioSummary
    public var report: LossReport
}

/// Creates sent to a database of one scenario's own, spread over classes of `perClass` instances, by instance id
/// (the id their effect carries).
final class OMSWorkload: Sendable {
    let database: String
    /// The classes creates go to, in order; the last one takes any creates beyond `perClass` × their number.
    let classes: [String]
    /// Instances per class: the graph is read per class, so a check costs the same late in a long soak as early.
    static let perClass = 200
    let ledger = OperationLedger()
    /// Acknowledged creates: instance id → command id and class, when the 202 came, and when the request was sent.
    private let acknowledged = Mutex<[String: (command: String, classID: String, at: ContinuousClock.Instant, sent: ContinuousClock.Instant)]>([:])
    /// Acknowledged creates seen passing all six checks; later checks ask only about the others.
    private let converged = Mutex<Set<String>>([])
    private let label: String

    /// A workload for about `expectedCreates` creates (more go to the last class).
    init(label: String, expectedCreates: Int = 0) {
        self.label = label
        database = "chaos-\(label)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        classes = (0..<max(1, (expectedCreates + Self.perClass - 1) / Self.perClass)).map { "Product\($0)" }
    }

    /// The first class: the one of a scenario with fewer than `perClass` creates.
    var classID: String { classes[0] }

    func classID(of index: Int) -> String { classes[min(index / Self.perClass, classes.count - 1)] }

    /// The database and its classes, all completed.
    func prepare(_ oms: ServiceClient) async throws {
        try await OMSCommands.complete(oms, "POST", "/api/v1/database/create", ["name": .string(database)])
        try await OMSClasses.create(oms, database: database, names: classes)
    }

    func send(_ index: Int, _ oms: ServiceClient) async -> LoadOutcome {
        let instance = "\(label)-\(index)"
        let classID = classID(of: index)
        let sent = ContinuousClock().now
        do {
            let answer = try await oms.request("POST", "/api/v1/instances/\(database)/async/\(classID)/create", json: ["data": ["name": .string("item \(index)")], "instance_id": .string(instance)], timeout: .seconds(10))
            if answer.status == 202, let command = answer.data?["command_id"]?.stringValue {
                let now = ContinuousClock().now
                acknowledged.withLock { $0[instance] = (command, classID, now, sent) }
                return .acknowledged(instance)
            }
            // A 4xx, or a 503 from a dependency that is down: the API wrote nothing (or rolled it back) — unless it
            // says the event store took the command without confirming it.
            if answer.body?["error"] == "event_store_outcome_unknown" { return .indeterminate(instance) }
            return answer.status < 500 || answer.status == 503 ? .refused(instance) : .indeterminate(instance)
        } catch {
            return .indeterminate(instance)
        }
    }

    /// Acknowledged creates.
    var creates: [OMSCreate] { acknowledged.withLock { $0.map { OMSCreate(instance: $0.key, command: $0.value.command, classID: $0.value.classID) } } }

    /// Acknowledged creates whose request was sent between `from` and `to` (a request sent before a fault may be
    /// answered after it began, having been handled before), instance id → command id.
    func acknowledged(sentFrom from: ContinuousClock.Instant, to: ContinuousClock.Instant) -> [String: String] {
        acknowledged.withLock { table in table.filter { $0.value.sent >= from && $0.value.sent <= to }.mapValues(\.command) }
    }

    /// Acknowledged creates whose 202 came before `instant`, instance id → command id.
    func acknowledged(before instant: ContinuousClock.Instant) -> [String: String] {
        acknowledged.withLock { table in table.filter { $0.value.at < instant }.mapValues(\.command) }
    }

    /// Effects for loss accounting, cheaply enough to poll through a long soak: the creates seen converged
    /// before, those converging now (only the others are read), and every create that was not acknowledged but
    /// is in the write model. Read-model losses after convergence and instances nobody sent are for `observeAll`.
    func observe(_ target: OMSChaosTarget) async throws -> [String] {
        let known = converged.withLock { $0 }
        let pending = creates.filter { !known.contains($0.instance) }
        let now = try await OMSConvergence.converged(database: database, creates: pending, oms: target.oms, stores: target.stores)
        let all = converged.withLock { $0.formUnion(now); return $0 }
        let unacknowledged = ledger.snapshot.filter { $0.value != .acknowledged }.map(\.key)
        return Array(all) + (try await target.stores.writtenInstances(database: database, among: unacknowledged))
    }

    /// Effects for loss accounting, everything read afresh, every class's whole graph.
    func observeAll(_ target: OMSChaosTarget) async throws -> [String] {
        try await OMSConvergence.observeAll(database: database, classes: classes, creates: creates, oms: target.oms, stores: target.stores)
    }

    /// Everything the ledger holds converges: polled with `observe` until it does, then confirmed once with
    /// `observeAll`, whose report (timed from `since`) is the one returned when the first converged.
    func converge(_ target: OMSChaosTarget, since: ContinuousClock.Instant, timeout: Duration) async throws -> LossReport {
        let polled = try await LossAccounting.converge(ledger, since: since, timeout: timeout, interval: .milliseconds(500)) { try await self.observe(target) }
        guard polled.passed else { return polled }
        return try await LossAccounting.converge(ledger, since: since, timeout: .seconds(30), interval: .seconds(1)) { try await self.observeAll(target) }
    }
}

extension OMSWorkload {
    /// Where the first three lost creates of `report` got stuck: which of the six checks each fails, and where its
    /// command is on the commands topic against the instance worker's committed offsets.
    func diagnoseLost(_ report: LossReport, on target: OMSChaosTarget) async throws -> [String] {
        let creates = Dictionary(uniqueKeysWithValues: creates.map { ($0.instance, $0) })
        var lines: [String] = []
        for instance in report.lost.prefix(3) {
            guard let create = creates[instance] else { continue }
            let checks = try await OMSConvergence.diagnose(database: database, classID: create.classID, instance: instance, command: create.command, oms: target.oms, stores: target.stores)
            let onKafka = (try? await OMSKafkaTrace.locate(command: create.command, target: target)) ?? "the commands topic could not be read"
            lines.append("lost \(instance): \(checks); \(onKafka)")
        }
        return lines
    }
}

/// Creating classes.
public enum OMSClasses {
    /// Creates classes `names` of `database` (16 requests at a time), each with one required string property
    /// `name`, and waits until the ontology lists them all.
    public static func create(_ client: ServiceClient, database: String, names: [String], timeout: Duration = .seconds(120)) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, name) in names.enumerated() {
                if index >= 16 { try await group.next() }
                group.addTask {
                    let answer = try await client.request("POST", "/api/v1/database/\(database)/ontology", json: ["id": .string(name), "properties": [["name": "name", "type": "string", "required": true]]])
                    guard answer.status == 202 else { throw ProdReadyError(.protocolError, "creating class \(name) answered \(answer.status): \(answer.body.map { "\($0)" } ?? "")") }
                }
            }
            try await group.waitForAll()
        }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var missing = Set(names)
        while true {
            let listed = try await client.get("/api/v1/database/\(database)/ontology").data?["ontologies"]?.arrayValue ?? []
            missing.subtract(listed.compactMap { $0["id"]?.stringValue })
            if missing.isEmpty { return }
            guard clock.now < deadline else { throw ProdReadyError(.timeout, "\(missing.count) of \(names.count) classes of \(database) did not exist after \(timeout), e.g. \(missing.sorted().prefix(3))") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// Sending a command and waiting for its outcome (the chaos scenarios' set-up, and the benchmarks').
public enum OMSCommands {
    /// Sends the command and returns once its status is COMPLETED; throws if it FAILED, or after `timeout`.
    public static func complete(_ oms: ServiceClient, _ method: String, _ path: String, _ body: JSONValue, timeout: Duration = .seconds(60)) async throws {
        let answer = try await oms.request(method, path, json: body)
        guard answer.status == 202, let command = answer.data?["command_id"]?.stringValue else {
            throw ProdReadyError(.protocolError, "\(method) \(path) answered \(answer.status): \(answer.body.map { "\($0)" } ?? "")")
        }
        try await waitForStatus(oms, command: command, timeout: timeout)
    }

    static func waitForStatus(_ oms: ServiceClient, command: String, until wanted: Set<String> = ["COMPLETED"], timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var last = "no answer"
        while clock.now < deadline {
            if let answer = try? await oms.get("/api/v1/commands/\(command)/status") {
                let status = answer.data?["status"]?.stringValue ?? "HTTP \(answer.status)"
                if wanted.contains(status) { return }
                if status == "FAILED" { throw ProdReadyError(.serverError, "command \(command) FAILED: \(answer.data?["error"] ?? .null)") }
                last = status
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ProdReadyError(.timeout, "command \(command) not \(wanted.sorted().joined(separator: "/")) within \(timeout) (last: \(last))")
    }
}

extension OMSChaosScenario {
    /// Runs the scenario on `target`: load at `rate` creates per second before, during and after the fault, then
    /// convergence of every acknowledged create within `convergeTimeout` of the fault's end. The summary is
    /// printed and written to the report directory.
    public func run(on target: OMSChaosTarget, rate: Int = 8, convergeTimeout: Duration = .seconds(120)) async throws -> OMSChaosOutcome {
        let workload = OMSWorkload(label: rawValue)
        try await workload.prepare(target.oms)
        let violations = Findings()
        let generator = LoadGenerator(ledger: workload.ledger, rate: rate, maxInFlight: 8) { await workload.send($0, target.oms) }
        target.log.note("scenario \(rawValue): load at \(rate)/s on database \(workload.database)")
        generator.start()
        let window: FaultWindow
        do {
            try await Self.waitForAcknowledgements(generator, atLeast: 3, what: "acknowledged creates before the fault")
            window = try await target.injector.inject(fault) { began in
                violations.add(contentsOf: try await checksDuringFault(target, workload, began: began))
            }
            let after = generator.acknowledgedCount
            try await Self.waitForAcknowledgements(generator, atLeast: after + 3, what: "acknowledged creates after the fault")
        } catch {
            await generator.stop()
            throw error
        }
        await generator.stop()
        let report = try await workload.converge(target, since: window.healed, timeout: convergeTimeout)
        target.log.note("scenario \(rawValue): \(report)")
        await Self.noteProcessWarnings(on: target, report)
        violations.add(contentsOf: try await checksAfterConvergence(target, workload))
        violations.add(contentsOf: try await workload.diagnoseLost(report, on: target))
        let summary = ScenarioSummary(
            suite: "oms", scenario: "chaos-lite " + rawValue, fault: fault.description, holdSeconds: Double(fault.hold.components.seconds),
            acknowledgedDuringFault: generator.acknowledged(from: window.began, to: window.healed), report: report, violations: violations.all)
        try ScenarioReport.record(summary)
        return OMSChaosOutcome(summary: summary, report: report)
    }

    /// SPEC-oms's goal for converging after a dependency returns.
    public static let convergenceGoal = Duration.seconds(10)

    /// Past half the goal (or not converged), the last warnings of each OMS process go into the log: a slow
    /// convergence in a CI run can then be explained from its output alone, where the processes' logs are gone.
    /// Half, not the whole goal: a run that came close (Postgres down after 6.2 s in ci33, 1.2–1.8 s otherwise)
    /// needs explaining before one that misses it.
    static func noteProcessWarnings(on target: OMSChaosTarget, _ report: LossReport) async {
        let goal = convergenceGoal / 2
        guard (report.convergedAfter ?? .seconds(Int64.max)) > goal else { return }
        var quiet: [String] = []
        for process in OMSProcesses.all {
            let warnings = await target.control.recentWarnings(of: process)
            guard !warnings.isEmpty else { quiet.append(process); continue }
            target.log.note("slower than \(goal): the last notices and warnings of \(process):\n  " + warnings.joined(separator: "\n  "))
        }
        if !quiet.isEmpty { target.log.note("slower than \(goal): no notices or warnings (or no readable log) from \(quiet.joined(separator: ", "))") }
    }

    static func waitForAcknowledgements(_ generator: LoadGenerator, atLeast count: Int, what: String, timeout: Duration = .seconds(60)) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while generator.acknowledgedCount < count {
            guard clock.now < deadline else { throw ProdReadyError(.timeout, "\(what): \(generator.acknowledgedCount) of \(count) within \(timeout)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// What SPEC-oms says must hold while the fault lasts; each broken rule is one line.
    func checksDuringFault(_ target: OMSChaosTarget, _ workload: OMSWorkload, began: ContinuousClock.Instant) async throws -> [String] {
        let clock = ContinuousClock()
        switch self {
        case .kafkaDown:
            // Sent in the fault's first second and accepted, and still not COMPLETED 5 s after it began. Their 202s
            // are collected 4 s in: on a loaded machine (a CI run starting every suite at once) an answer took over a
            // second, and a check at 2 s then found none.
            try await clock.sleep(until: began + .seconds(4))
            let early = workload.acknowledged(sentFrom: began, to: began + .seconds(1))
            try await clock.sleep(until: began + .milliseconds(5_500))
            var violations: [String] = []
            if early.isEmpty { violations.append("no create was accepted (202) in the first second of the Kafka outage") }
            for (instance, command) in early.sorted(by: { $0.key < $1.key }) {
                let status = try await target.oms.get("/api/v1/commands/\(command)/status").data?["status"]?.stringValue
                if status == "COMPLETED" { violations.append("\(instance) (command \(command)) COMPLETED within 5 s while Kafka was down") }
            }
            return violations
        case .redisDown:
            try await clock.sleep(until: began + .milliseconds(1_500))
            var violations: [String] = []
            if let (instance, command) = workload.acknowledged(before: began).first {
                let answer = try await target.oms.get("/api/v1/commands/\(command)/status")
                if answer.status != 503 || answer.body?["error"] != "command_status_unavailable" {
                    violations.append("command status of \(instance) with Redis down answered \(answer.status) \(answer.body.map { "\($0)" } ?? ""), not 503 command_status_unavailable")
                }
            }
            try await clock.sleep(until: began + .seconds(5))
            let during = workload.acknowledged(sentFrom: began, to: clock.now)
            let nodes = try await target.oms.get("/api/v1/graph/\(workload.database)?class=\(workload.classID)").data?["nodes"]?.arrayValue ?? []
            for node in nodes {
                guard let id = node["id"]?.stringValue, during[id] != nil else { continue }
                if node["data_status"] == "FULL" { violations.append("\(id), created while Redis was down, showed FULL before Redis returned") }
            }
            return violations
        case .postgresDown, .s3Down:
            try await clock.sleep(until: began + .milliseconds(1_500))
            let probe = "probe-\(rawValue)"
            let dependency = self == .s3Down ? "S3" : "Postgres"
            let answer = try? await target.oms.request("POST", "/api/v1/instances/\(workload.database)/async/\(workload.classID)/create", json: ["data": ["name": "probe"], "instance_id": .string(probe)], timeout: .seconds(5))
            guard let answer else {
                workload.ledger.indeterminate(probe)
                return ["a create with \(dependency) down got no answer within 5 s"]
            }
            workload.ledger.record(probe, answer.status == 202 ? .acknowledged : answer.body?["error"] == "event_store_outcome_unknown" ? .indeterminate : .refused)
            if answer.status != 503 || answer.header("Retry-After") == nil {
                return ["a create with \(dependency) down answered \(answer.status) (Retry-After: \(answer.header("Retry-After") ?? "none")), not 503 with Retry-After"]
            }
            return []
        case .instanceWorkerTakeover:
            // Creates sent 0.5–2.5 s into the pause land on all twelve partitions, about half of them the paused
            // worker's: each must complete before it resumes, which only the replica taking those over can do.
            try await clock.sleep(until: began + .milliseconds(2_600))
            let early = workload.acknowledged(sentFrom: began + .milliseconds(500), to: began + .milliseconds(2_500))
            if early.count < 4 { return ["only \(early.count) creates were acknowledged 0.5–2.5 s into the pause; too few to show a takeover"] }
            var pending = early
            var completedAt: [Duration] = []
            let deadline = began + fault.hold - .milliseconds(500)
            while !pending.isEmpty && clock.now < deadline {
                for (instance, command) in pending.sorted(by: { $0.key < $1.key }) {
                    let status = try? await target.oms.get("/api/v1/commands/\(command)/status").data?["status"]?.stringValue
                    if status == "COMPLETED" {
                        pending[instance] = nil
                        completedAt.append(clock.now - began)
                    }
                }
                try await Task.sleep(for: .milliseconds(250))
            }
            let seconds = completedAt.map { String(format: "%.1f", Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18) }
            target.log.note("takeover: \(completedAt.count) of \(early.count) early creates COMPLETED during the pause, at \(seconds.joined(separator: ", ")) s")
            guard !pending.isEmpty else { return [] }
            return ["\(pending.count) of \(early.count) creates sent early in the pause were not COMPLETED before the paused worker resumed (no takeover by \(OMSProcesses.instanceWorkerReplica); the others completed at \(seconds.isEmpty ? "none" : seconds.joined(separator: ", ")) s): \(pending.keys.sorted().prefix(5).joined(separator: ", "))"]
        default:
            return []
        }
    }

    /// What must hold once everything converged.
    func checksAfterConvergence(_ target: OMSChaosTarget, _ workload: OMSWorkload) async throws -> [String] {
        guard self == .instanceWorkerAfterClaim else { return [] }
        let rows = try await target.stores.processedEvents(handler: OMSProcesses.instanceWorker, database: workload.database)
        let most = rows.values.map(\.attempts).max() ?? 0
        return most >= 2 ? [] : ["no command of \(workload.database) was claimed twice (max attempt_count \(most)): the crash after the claim left no trace"]
    }
}
