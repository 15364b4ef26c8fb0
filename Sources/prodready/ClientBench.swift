import ArgumentParser
import Foundation
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPerformance
import ProdReadyKafka
import ProdReadyNATS
import ProdReadyRedis
import ProdReadyS3

struct ClientBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clients",
        abstract: "Measure the messaging and storage clients against a private embedded stack (issue #4's figures).",
        discussion: """
        Boots a private embedded stack with the components measured, runs each measurement, prints one line per \
        measurement with percentiles and throughput, tears the stack down, and exits 1 if a target is missed. \
        Kafka: idempotent produce of 200-byte messages (target >= 200,000 msg/s) and consume from the start of \
        the topic (target >= 300,000 msg/s). JetStream: async windowed publish with acks and pull-consume with acks, file storage (targets >= 20,000 \
        msg/s each). Redis: pipelined SET/GET on one connection (target >= 100,000 ops/s). \
        S3: PUT of small objects with several in flight (reported, no target).
        """
    )

    enum Client: String, CaseIterable, ExpressibleByArgument {
        case kafka
        case nats
        case redis
        case s3

        var component: Component {
            switch self {
            case .kafka: .kafka
            case .nats: .nats
            case .redis: .redis
            case .s3: .s3
            }
        }
    }

    @OptionGroup var options: CommonOptions
    @Option(name: .long, parsing: .upToNextOption, help: "Clients to measure (default: all): \(Client.allCases.map(\.rawValue).joined(separator: ", ")).")
    var only: [Client] = Client.allCases
    @Option(name: .long, help: "Kafka messages (200 bytes each).")
    var kafkaMessages: Int = 500_000
    @Option(name: .long, help: "librdkafka linger.ms: how long the producer waits to fill a batch.")
    var kafkaLingerMs: Int = 5
    @Option(name: .long, help: "Kafka messages per send(batch:).")
    var kafkaBatch: Int = 10_000
    @Option(name: .long, help: "Kafka batches in flight at once.")
    var kafkaInFlight: Int = 4
    @Option(name: .long, help: "JetStream messages (200 bytes each).")
    var natsMessages: Int = 200_000
    @Option(name: .long, help: "JetStream publishes in flight.")
    var natsWindow: Int = 1_024
    @Option(name: .long, help: "Messages per JetStream fetch.")
    var natsFetch: Int = 500
    @Option(name: .long, help: "Redis operations (half SET, half GET).")
    var redisOperations: Int = 1_000_000
    @Option(name: .long, help: "Redis commands per pipeline.")
    var redisPipeline: Int = 1_000
    @Option(name: .long, help: "S3 objects to PUT.")
    var s3Objects: Int = 5_000
    @Option(name: .long, help: "S3 object size in bytes.")
    var s3ObjectSize: Int = 1_024
    @Option(name: .long, help: "S3 PUTs in flight.")
    var s3InFlight: Int = 16

    func validate() throws {
        try validateRanges([
            ("--kafka-messages", kafkaMessages, 1...50_000_000), ("--kafka-batch", kafkaBatch, 1...1_000_000), ("--kafka-linger-ms", kafkaLingerMs, 0...1_000), ("--kafka-in-flight", kafkaInFlight, 1...64),
            ("--nats-messages", natsMessages, 1...10_000_000), ("--nats-window", natsWindow, 1...65_536), ("--nats-fetch", natsFetch, 1...10_000),
            ("--redis-operations", redisOperations, 2...100_000_000), ("--redis-pipeline", redisPipeline, 2...100_000),
            ("--s3-objects", s3Objects, 1...1_000_000), ("--s3-object-size", s3ObjectSize, 0...(16 << 20)), ("--s3-in-flight", s3InFlight, 1...256),
        ])
    }

    func run() async throws {
        let home = options.resolvedHome
        let components = Component.closure(Set(only).map(\.component))
        let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: "bench-clients"), home: home, owned: true)
        let failed: [String]
        do {
            progress("booting a private stack: \(components.map(\.rawValue).joined(separator: ", "))")
            try await stack.ensure(components)
            let validator = PerformanceValidator()
            for client in Client.allCases where only.contains(client) {
                switch client {
                case .kafka: try await measureKafka(stack: stack, validator: validator)
                case .nats: try await measureNATS(stack: stack, validator: validator)
                case .redis: try await measureRedis(stack: stack, validator: validator)
                case .s3: try await measureS3(stack: stack, validator: validator)
                }
            }
            failed = await validator.summarize()
        } catch {
            try? await stack.teardown(removeData: true)
            throw fail(error)
        }
        try await stack.teardown(removeData: true)
        if !failed.isEmpty {
            progress("below target:\n" + failed.joined(separator: "\n"))
            throw ExitCode(1)
        }
    }

    private func measureKafka(stack: NativeStack, validator: PerformanceValidator) async throws {
        let servers = try await stack.endpoints.kafkaBootstrapServers.orThrow(ProdReadyError(.configuration, "the private stack has no Kafka broker"))
        var configuration = KafkaConfiguration.embedded(bootstrapServers: servers, clientID: "bench")
        configuration.properties["linger.ms"] = String(kafkaLingerMs)
        let topic = "bench"
        try await KafkaAdmin(configuration: configuration).createTopic(topic, partitions: 1, allowExisting: true)
        let producer = try KafkaProducer(configuration: configuration)
        let value = [UInt8](repeating: UInt8(ascii: "x"), count: 200)
        progress("Kafka: producing \(kafkaMessages) messages of 200 bytes, idempotent, linger.ms=\(kafkaLingerMs), \(kafkaInFlight) batches of \(kafkaBatch) in flight")
        let keys = (0..<64).map { Array("k\($0)".utf8) }
        // As the Python baseline does: one acknowledged message first, so the producer id handshake and the
        // topic's metadata are not part of the figure.
        _ = try await producer.send(topic: topic, key: Array("warm-up".utf8), value: value)
        let clock = ContinuousClock()
        var produce = await validator.newMeasurement("Kafka idempotent produce, 200 B (msg/s)", thresholds: [.throughput(atLeast: 200_000)])
        let produceStart = clock.now
        // Batches overlap so librdkafka's queue never drains while a batch waits for its last acknowledgement.
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            var inFlight = 0
            for start in stride(from: 0, to: kafkaMessages, by: kafkaBatch) {
                if inFlight == kafkaInFlight {
                    try await tasks.next()
                    inFlight -= 1
                }
                let batch = (start..<min(start + kafkaBatch, kafkaMessages)).map { KafkaOutgoing(topic: topic, key: keys[$0 % keys.count], value: value) }
                tasks.addTask {
                    for outcome in try await producer.send(batch: batch) { _ = try outcome.get() }
                }
                inFlight += 1
            }
            try await tasks.waitForAll()
        }
        produce.elapsed = clock.now - produceStart
        produce.record(operations: kafkaMessages)
        await validator.add(produce)

        progress("Kafka: consuming \(kafkaMessages) messages from the start")
        let consumer = try KafkaConsumer(configuration: configuration, groupID: "bench-reader")
        try await consumer.assign(topic: topic, partition: 0, offset: 0)
        var consume = await validator.newMeasurement("Kafka consume, 1 partition (msg/s)", thresholds: [.throughput(atLeast: 300_000)])
        let consumeStart = clock.now
        let read = try await consumer.collect(kafkaMessages + 1, within: .seconds(300)).count - 1
        consume.elapsed = clock.now - consumeStart
        consume.record(operations: read)
        await validator.add(consume)
        guard read == kafkaMessages else { throw ProdReadyError(.protocolError, "read \(read) of \(kafkaMessages) Kafka messages") }
    }

    private func measureNATS(stack: NativeStack, validator: PerformanceValidator) async throws {
        let url = try await stack.endpoints.natsURL.orThrow(ProdReadyError(.configuration, "the private stack has no NATS URL"))
        let nats = try await NATSConnection(url: url, name: "bench")
        try await nats.createOrUpdateStream(JetStreamStreamConfiguration(name: "BENCH", subjects: ["bench.>"]))
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 200)
        progress("JetStream: publishing \(natsMessages) messages of 200 bytes, \(natsWindow) in flight")
        let clock = ContinuousClock()
        let chunk = 10_000
        var publish = await validator.newMeasurement("JetStream async publish with acks, window \(natsWindow) (msg/s)", thresholds: [.throughput(atLeast: 20_000)])
        let publishStart = clock.now
        for start in stride(from: 0, to: natsMessages, by: chunk) {
            let messages = (start..<min(start + chunk, natsMessages)).map { JetStreamOutgoing(subject: "bench.m", payload: payload, messageID: "m\($0)") }
            let results = try await nats.publishAsync(messages, window: natsWindow, timeout: .seconds(30))
            if let failure = results.first(where: { if case .failure = $0 { true } else { false } }) { _ = try failure.get() }
        }
        publish.elapsed = clock.now - publishStart
        publish.record(operations: natsMessages)
        await validator.add(publish)

        progress("JetStream: pull-consuming with acks, \(natsFetch) per fetch")
        let consumer = try await nats.pullSubscribe(subject: "bench.>", consumer: .init(durable: "bench"))
        var consume = await validator.newMeasurement("JetStream pull-consume, \(natsFetch) per fetch, acked per batch (msg/s)", thresholds: [.throughput(atLeast: 20_000)])
        let consumeStart = clock.now
        var read = 0
        while read < natsMessages {
            let batch = try await consumer.fetch(batch: natsFetch, timeout: .seconds(5))
            guard !batch.isEmpty else { throw ProdReadyError(.protocolError, "JetStream delivered \(read) of \(natsMessages) messages") }
            try await nats.acknowledge(batch)
            read += batch.count
        }
        consume.elapsed = clock.now - consumeStart
        consume.record(operations: read)
        await validator.add(consume)
        try await nats.deleteStream("BENCH")
    }

    private func measureRedis(stack: NativeStack, validator: PerformanceValidator) async throws {
        let url = try await stack.endpoints.redisURL.orThrow(ProdReadyError(.configuration, "the private stack has no Redis URL"))
        let redis = try await RedisConnection(url: url)
        let batchSize = redisPipeline / 2 * 2
        let batches = (redisOperations + batchSize - 1) / batchSize
        let value = [UInt8](repeating: UInt8(ascii: "v"), count: 100)
        progress("Redis: \(batches * batchSize) operations in pipelines of \(batchSize) (SET then GET of the same keys, 100-byte values)")
        let measurement = try await validator.measure(
            "Redis pipelined SET/GET, 1 connection, \(batchSize) per pipeline (pipelines)", thresholds: [], operations: batches
        ) { batch in
            let keys = (0..<batchSize / 2).map { Array("bench:\(batch % 100):\($0)".utf8) }
            let commands = keys.map { [Array("SET".utf8), $0, value] } + keys.map { [Array("GET".utf8), $0] }
            let results = try await redis.pipeline(commands)
            guard results.count == commands.count, results.suffix(keys.count).allSatisfy({ (try? $0.get()) == .string(value) }) else {
                throw ProdReadyError(.protocolError, "pipeline \(batch) did not read back what it wrote")
            }
        }
        var perOperation = await validator.newMeasurement("Redis pipelined SET/GET, 1 connection (ops/s)", thresholds: [.throughput(atLeast: 100_000)])
        perOperation.record(operations: batches * batchSize)
        perOperation.elapsed = measurement.elapsed
        await validator.add(perOperation)
        _ = try await redis.command(["FLUSHDB"])
    }

    private func measureS3(stack: NativeStack, validator: PerformanceValidator) async throws {
        let endpoint = try await stack.endpoints.s3.orThrow(ProdReadyError(.configuration, "the private stack has no S3 endpoint"))
        let client = S3Client(configuration: try S3Configuration(endpoint: endpoint.url, accessKey: endpoint.accessKey, secretKey: endpoint.secretKey, region: endpoint.region))
        let bucket = "bench-\(getpid())"
        try await client.createBucket(bucket)
        let body = [UInt8](repeating: UInt8(ascii: "x"), count: s3ObjectSize)
        progress("S3: \(s3Objects) PUTs of \(s3ObjectSize) bytes, \(s3InFlight) in flight")
        try await validator.measure("S3 PUT \(s3ObjectSize) B, \(s3InFlight) in flight (objects/s)", thresholds: [], operations: s3Objects, concurrency: s3InFlight) { index in
            try await client.putObject(bucket: bucket, key: "objects/\(index)", body: body)
        }
        let stored = try await client.listKeys(bucket: bucket, prefix: "objects/").count
        guard stored == s3Objects else {
            throw ProdReadyError(.protocolError, "the bucket lists \(stored) objects after \(s3Objects) PUTs")
        }
        progress("S3: all \(stored) objects listed back")
    }
}
