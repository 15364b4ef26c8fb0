import Testing
import Foundation
import Synchronization
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import TestSupport

@Suite("Kafka under failure: broker restarts and dying group members")
struct KafkaFailureTests {
    @Test(
        "an idempotent producer sends 10,000 keyed messages while the broker is SIGKILLed and restarted: a fresh reader gets each exactly once, in order per key",
        .requiresEmbedded(.kafka, .s3)
    )
    func noLossNoDuplicatesAcrossBrokerRestart() async throws {
        try await withPrivateStack([.s3, .kafka], label: "kafka-restart") { stack in
            let servers = try #require(await stack.endpoints.kafkaBootstrapServers)
            var configuration = KafkaConfiguration.embedded(bootstrapServers: servers)
            // Long enough that librdkafka keeps retrying through the outage instead of failing messages.
            configuration.deliveryTimeout = .seconds(120)
            let topic = "restart"
            try await KafkaAdmin(configuration: configuration).createTopic(topic, partitions: 4)
            let producer = try KafkaProducer(configuration: configuration)
            let total = 10_000
            let keys = 20
            let acknowledged = Counter()

            let outcomes = try await withThrowingTaskGroup(of: [Result<KafkaDeliveryReport, ProdReadyError>]?.self) { tasks in
                tasks.addTask {
                    var outcomes: [Result<KafkaDeliveryReport, ProdReadyError>] = []
                    for start in stride(from: 0, to: total, by: 250) {
                        let batch = (start..<start + 250).map { n in
                            KafkaOutgoing(topic: topic, key: Array("key-\(n % keys)".utf8), value: Array("key-\(n % keys):\(n / keys)".utf8))
                        }
                        let results = try await producer.send(batch: batch)
                        acknowledged.add(results.count)
                        outcomes += results
                    }
                    return outcomes
                }
                tasks.addTask {
                    try await eventually("3,000 messages acknowledged before the crash", timeout: .seconds(60)) {
                        acknowledged.value >= 3_000 ? .done(()) : .pending("\(acknowledged.value) acknowledged")
                    }
                    try await stack.kill(.kafka)
                    try await stack.start(.kafka)
                    return nil
                }
                var sent: [Result<KafkaDeliveryReport, ProdReadyError>] = []
                for try await result in tasks { if let result { sent = result } }
                return sent
            }
            let failures = outcomes.compactMap { if case .failure(let error) = $0 { error } else { nil } }
            #expect(outcomes.count == total && failures.isEmpty, "\(failures.count) of \(total) sends failed, first: \(String(describing: failures.first))")
            let withoutOffset = outcomes.filter { (try? $0.get())?.offset ?? 0 < 0 }.count

            let reader = try KafkaConsumer(configuration: configuration, groupID: "verify")
            try await reader.assign(Dictionary(uniqueKeysWithValues: (0..<4).map { (KafkaTopicPartition(topic, $0), KafkaOffset.beginning) }))
            let read = try await reader.readUntilIdle(atMost: total + 1_000, idle: .seconds(5), within: .seconds(120))
            let values = read.map(\.text)
            let distinct = Set(values)
            var perPartition: [String] = []
            for partition in Int32(0)..<4 {
                let high = try await KafkaAdmin(configuration: configuration).watermarks(topic: topic, partition: partition).high
                perPartition.append("[\(partition)] high watermark \(high), readable \(read.filter { $0.partition == partition }.count)")
            }
            let report = "read \(values.count) messages for \(total) sent (\(values.count - distinct.count) duplicates; \(withoutOffset) deliveries acknowledged without an offset; \(perPartition.joined(separator: ", ")))"
            #expect(values.count == distinct.count, "duplicates: \(report)")
            #expect(distinct.isSubset(of: Set((0..<total).map { "key-\($0 % keys):\($0 / keys)" })), "messages nobody sent: \(report)")
            for key in 0..<keys {
                let sequence = values.filter { $0.hasPrefix("key-\(key):") }.compactMap { Int($0.split(separator: ":")[1]) }
                #expect(sequence == sequence.sorted(), "key-\(key) arrived out of order")
            }
            let missing = total - distinct.count
            if missing > 0, withoutOffset > 0 {
                // Tansu 0.6 commits an idempotent producer's sequence number (and then the partition's high watermark)
                // to S3 before it writes the record batch. Killed in between, it answers librdkafka's retry of that
                // batch with DUPLICATE_SEQUENCE_NUMBER, which librdkafka takes as "already stored": the delivery is
                // acknowledged (its first message without an offset) and the batch is gone. This loss, with that
                // signature, is the broker's; any other loss fails the test.
                withKnownIssue("Tansu 0.6 acknowledges a batch it never stored after a SIGKILL mid-produce", isIntermittent: true) {
                    Issue.record("acknowledged messages lost: \(report)")
                }
            } else {
                #expect(missing == 0, "acknowledged messages lost: \(report)")
            }
        }
    }

    @Test(
        "3 group members run as child processes, one SIGKILLed mid-stream: the others take over its partitions and, committing after processing, every message is processed at least once",
        .requires(.kafka)
    )
    func groupMemberKilledMidStream() async throws {
        let servers = try #require(try await TestInfrastructure.shared.endpoints(for: [.kafka]).kafkaBootstrapServers)
        try await withKafkaTopic(servers, partitions: 6) { topic in
            let total = 3_000
            let producer = try KafkaProducer(configuration: .embedded(bootstrapServers: servers))
            let reports = try await producer.send(batch: (0..<total).map { KafkaOutgoing(topic: topic, key: Array("k\($0)".utf8), value: Array("m\($0)".utf8)) })
            #expect(reports.allSatisfy { (try? $0.get()) != nil })

            let group = uniqueName("members")
            let executable = try ServiceProcess.builtExecutable(named: "prodready")
            let members = try (0..<3).map { index in
                try ServiceProcess(
                    name: "member-\(index)",
                    executable: executable,
                    arguments: [
                        "kafka", "consume", "--bootstrap-servers", servers, "--topic", topic, "--group", group,
                        "--session-timeout-ms", "3000", "--batch-size", "20", "--process-delay-ms", "3",
                    ],
                    readiness: .logLine("consumer ready")
                )
            }
            do {
                for member in members { try await member.start() }
                let victim = members[0]
                // Kill once the victim is processing a share of a three-member group's partitions.
                let victimPartitions = try await eventually("the victim to hold part of a 3-member assignment and process from it", timeout: .seconds(60)) { () -> PollOutcome<Set<Int32>> in
                    let log = MemberLog(victim.readLog() ?? "")
                    guard let assigned = log.currentAssignment, assigned.count < 6, log.processed.count >= 50 else {
                        return .pending("victim assignment \(log.currentAssignment ?? []), \(log.processed.count) processed")
                    }
                    return .done(assigned)
                }
                let processedByVictim = MemberLog(victim.readLog() ?? "").processed.count
                let assignmentsBeforeKill = members.map { MemberLog($0.readLog() ?? "").assignments.count }
                try await victim.kill()

                try await eventually("all \(total) messages processed by someone", timeout: .seconds(120)) { () -> PollOutcome<Void> in
                    let seen = Set(members.flatMap { MemberLog($0.readLog() ?? "").processed.map(\.value) })
                    return seen.count == total ? .done(()) : .pending("\(seen.count) of \(total) processed")
                }
                let takenOver = Set((1..<3).flatMap { index in
                    MemberLog(members[index].readLog() ?? "").assignments.dropFirst(assignmentsBeforeKill[index]).flatMap { $0 }
                })
                #expect(victimPartitions.isSubset(of: takenOver), "the victim's partitions \(victimPartitions.sorted()) were not all reassigned to survivors (they got \(takenOver.sorted()))")
                let all = members.flatMap { MemberLog($0.readLog() ?? "").processed }
                let duplicates = all.count - Set(all.map(\.value)).count
                #expect(Set(all.map(\.value)) == Set((0..<total).map { "m\($0)" }), "messages never processed")
                // At least once: only work the victim did after its last commit may be repeated (at most one batch per partition it held).
                #expect(duplicates <= victimPartitions.count * 20, "\(duplicates) duplicates; the victim processed \(processedByVictim) before dying")
                for member in members.dropFirst() { try await member.stop() }
            } catch {
                for member in members { try? await member.cleanUp() }
                throw error
            }
            for member in members { try? await member.cleanUp() }
        }
    }
}

extension KafkaConsumer {
    /// Reads until `atMost` messages arrived, nothing arrived for `idle`, or `within` passed.
    func readUntilIdle(atMost limit: Int, idle: Duration, within timeout: Duration) async throws -> [KafkaMessage] {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var lastArrival = clock.now
        var messages: [KafkaMessage] = []
        while messages.count < limit, clock.now < deadline, clock.now - lastArrival < idle {
            let batch = try await poll(upTo: limit - messages.count, timeout: .milliseconds(200))
            if !batch.isEmpty { lastArrival = clock.now }
            messages += batch
        }
        return messages
    }
}

/// What `prodready kafka consume` printed: one line per processed message, assignments on stderr.
struct MemberLog {
    struct Processed: Hashable {
        var partition: Int32
        var offset: Int64
        var value: String
    }

    var processed: [Processed] = []
    /// Each assignment the member was given (eager rebalancing: each is its whole assignment).
    var assignments: [Set<Int32>] = []

    init(_ log: String) {
        for line in log.split(separator: "\n") {
            if line.hasPrefix("prodready: assigned ") {
                assignments.append(Set(line.dropFirst("prodready: assigned ".count).split(separator: " ").compactMap { entry in
                    entry.split(separator: "[").last.flatMap { Int32($0.dropLast()) }
                }))
            } else if line.hasPrefix("prodready: revoked") {
                assignments.append([])
            } else if !line.hasPrefix("prodready:") {
                let fields = line.split(separator: " ")
                guard fields.count == 5, let partition = Int32(fields[1]), let offset = Int64(fields[2]) else { continue }
                processed.append(Processed(partition: partition, offset: offset, value: String(fields[4])))
            }
        }
    }

    var currentAssignment: Set<Int32>? { assignments.last.flatMap { $0.isEmpty ? nil : $0 } }
}

/// A count shared between tasks.
final class Counter: Sendable {
    private let count = Mutex(0)
    func add(_ amount: Int) { count.withLock { $0 += amount } }
    var value: Int { count.withLock { $0 } }
}
