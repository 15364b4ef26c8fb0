import ArgumentParser
import Foundation
import Logging
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import ServiceLifecycle

struct KafkaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka",
        abstract: "Consume a Kafka topic as a consumer-group member, and show a group's lag.",
        discussion: """
        The broker is --bootstrap-servers, else the KAFKA_BOOTSTRAP_SERVERS variable that \
        `eval "$(prodready up)"` exports.
        """,
        subcommands: [Consume.self, Lag.self]
    )

    struct BrokerOptions: ParsableArguments {
        @Option(name: .long, help: "host:port[,host:port…] (default: $KAFKA_BOOTSTRAP_SERVERS).")
        var bootstrapServers: String?

        @Option(name: .long, help: "How long the broker waits for a member's heartbeat before it hands that member's partitions to others, in milliseconds. Apache Kafka refuses values below its group.min.session.timeout.ms (6000 by default); the embedded broker delays a group's first join by a fraction of it.")
        var sessionTimeoutMs: Int = 6_000

        func configuration(clientID: String) throws -> KafkaConfiguration {
            guard let servers = bootstrapServers ?? ProcessInfo.processInfo.environment[EnvironmentVariable.kafkaBootstrapServers], !servers.isEmpty else {
                throw ProdReadyError(.configuration, "no broker: pass --bootstrap-servers or set \(EnvironmentVariable.kafkaBootstrapServers) (eval \"$(prodready up)\" sets it)")
            }
            var configuration = KafkaConfiguration.embedded(bootstrapServers: servers, clientID: clientID)
            configuration.sessionTimeoutMilliseconds = sessionTimeoutMs
            return configuration
        }
    }

    struct Consume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Join a consumer group and print every message as one line until stopped (SIGTERM/SIGINT leave the group cleanly).",
            discussion: """
            Each message is printed on stdout as `<topic> <partition> <offset> <key> <value>` (key `-` when \
            absent; key and value as UTF-8 text). A message's offset is stored once its line is written and the \
            stored offsets are committed after every batch, so a member that dies makes its partitions' next \
            owner start after the last committed batch: every message is printed at least once. Assignments and \
            revocations are reported on stderr.
            """
        )

        @OptionGroup var broker: BrokerOptions
        @Option(name: .long, help: "Topic to read (repeatable).")
        var topic: [String]
        @Option(name: .long, help: "Consumer group id.")
        var group: String
        @Option(name: .long, help: "Where a partition without a committed offset starts: earliest or latest.")
        var from: StartPosition = .earliest
        @Option(name: .long, help: "Exit after this many messages (0: run until stopped).")
        var maxMessages: Int = 0
        @Option(name: .long, help: "Messages per batch (1–10000).")
        var batchSize: Int = 500
        @Option(name: .long, help: "Fault injection: pretend each message takes this many milliseconds to process.")
        var processDelayMs: Int = 0

        enum StartPosition: String, ExpressibleByArgument {
            case earliest
            case latest
        }

        func validate() throws {
            guard !group.isEmpty else { throw ValidationError("--group must not be empty") }
            try validateRanges([
                ("--max-messages", maxMessages, 0...Int.max), ("--batch-size", batchSize, 1...10_000),
                ("--process-delay-ms", processDelayMs, 0...60_000), ("--session-timeout-ms", broker.sessionTimeoutMs, 1...3_600_000),
            ])
        }

        func run() async throws {
            do {
                let consumer = try KafkaConsumer(
                    configuration: try broker.configuration(clientID: "prodready-consume"),
                    groupID: group,
                    startFromEarliest: from == .earliest
                )
                try await consumer.subscribe(topics: topic)
                progress("consumer ready (group \(group), topics \(topic.joined(separator: ",")))")
                let service = ConsumeService(consumer: consumer, batchSize: batchSize, maxMessages: maxMessages, processDelay: .milliseconds(processDelayMs))
                let logger = Logger(label: "prodready.kafka", factory: { _ in SwiftLogNoOpLogHandler() })
                let group = ServiceGroup(
                    configuration: .init(services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
                )
                try await group.run()
            } catch let error as ProdReadyError {
                throw fail(error)
            }
        }
    }

    struct Lag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print, per partition, a consumer group's committed offset, the newest offset and the lag between them.",
            discussion: "Exits 0 whatever the lag; `--json` prints one JSON object per partition for scripts."
        )

        @OptionGroup var broker: BrokerOptions
        @Option(name: .long, help: "Topic to inspect.")
        var topic: String
        @Option(name: .long, help: "Consumer group id.")
        var group: String
        @Flag(name: .long, help: "One JSON object per line instead of a table.")
        var json = false

        func run() async throws {
            do {
                let admin = try KafkaAdmin(configuration: try broker.configuration(clientID: "prodready-lag"))
                let lags = try await admin.consumerGroupLag(group: group, topic: topic)
                if !json { print("partition  committed  high  lag") }
                for entry in lags {
                    let committed = entry.committed.map(String.init) ?? "-"
                    if json {
                        print(#"{"topic":"\#(topic)","partition":\#(entry.partition.partition),"committed":\#(entry.committed.map(String.init) ?? "null"),"low":\#(entry.watermarks.low),"high":\#(entry.watermarks.high),"lag":\#(entry.lag)}"#)
                    } else {
                        print("\(entry.partition.partition)  \(committed)  \(entry.watermarks.high)  \(entry.lag)")
                    }
                }
                if !json { print("total lag: \(lags.reduce(0) { $0 + $1.lag })") }
            } catch let error as ProdReadyError {
                throw fail(error)
            }
        }
    }
}

/// Prints messages, storing each offset once printed and committing per batch; ends on graceful shutdown
/// (leaving the group, which commits what was stored) or after `maxMessages`.
struct ConsumeService: Service {
    let consumer: KafkaConsumer
    let batchSize: Int
    let maxMessages: Int
    let processDelay: Duration

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await reportRebalances() }
            let processed = try await consume()
            try await consumer.close()
            progress("consumer stopped after \(processed) messages")
            tasks.cancelAll()
        }
    }

    private func consume() async throws -> Int {
        try await cancelWhenGracefulShutdown {
            var processed = 0
            while !Task.isCancelled, maxMessages == 0 || processed < maxMessages {
                let limit = maxMessages == 0 ? batchSize : min(batchSize, maxMessages - processed)
                let batch: [KafkaMessage]
                do {
                    batch = try await consumer.poll(upTo: limit, timeout: .milliseconds(200))
                } catch let error as ProdReadyError where error.isRetriable {
                    progress("broker notice: \(error.message)")
                    continue
                }
                for message in batch {
                    if processDelay > .zero { try await Task.sleep(for: processDelay) }
                    let key = message.key.map { String(decoding: $0, as: UTF8.self) } ?? "-"
                    // Unbuffered, so a test reading the output sees each line before the process can be killed.
                    FileHandle.standardOutput.write(Data("\(message.topic) \(message.partition) \(message.offset) \(key) \(message.text)\n".utf8))
                    try await consumer.store([message])
                    processed += 1
                }
                if !batch.isEmpty { try await consumer.commitStored() }
            }
            return processed
        }
    }

    private func reportRebalances() async {
        for await event in consumer.rebalanceEvents {
            switch event {
            case .assigned(let partitions): progress("assigned \(partitions.map(\.description).sorted().joined(separator: " "))")
            case .revoked(let partitions): progress("revoked \(partitions.map(\.description).sorted().joined(separator: " "))")
            case .failed(let reason): progress("rebalance failed: \(reason)")
            }
        }
    }
}
