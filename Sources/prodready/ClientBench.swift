import ArgumentParser
import Foundation
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPerformance
import ProdReadyRedis
import ProdReadyS3

struct ClientBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clients",
        abstract: "Measure the messaging and storage clients against a private embedded stack (issue #4's figures).",
        discussion: """
        Boots a private embedded stack with the components measured, runs each measurement, prints one line per \
        measurement with percentiles and throughput, tears the stack down, and exits 1 if a target is missed. \
        Redis: pipelined SET/GET on one connection (target >= 100,000 ops/s). \
        S3: PUT of small objects with several in flight (no target: the Python S3 server is the ceiling).
        """
    )

    enum Client: String, CaseIterable, ExpressibleByArgument {
        case redis
        case s3
    }

    @OptionGroup var options: CommonOptions
    @Option(name: .long, parsing: .upToNextOption, help: "Clients to measure (default: all): \(Client.allCases.map(\.rawValue).joined(separator: ", ")).")
    var only: [Client] = Client.allCases
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
        for (name, value, range) in [
            ("--redis-operations", redisOperations, 2...100_000_000), ("--redis-pipeline", redisPipeline, 2...100_000),
            ("--s3-objects", s3Objects, 1...1_000_000), ("--s3-object-size", s3ObjectSize, 0...(16 << 20)), ("--s3-in-flight", s3InFlight, 1...256),
        ] where !range.contains(value) {
            throw ValidationError("\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
    }

    func run() async throws {
        let home = options.resolvedHome
        let components: [Component] = Set(only).map { switch $0 { case .redis: .redis; case .s3: .s3 } }
        let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: "bench-clients"), home: home, owned: true)
        let failed: [String]
        do {
            progress("booting a private stack: \(components.map(\.rawValue).sorted().joined(separator: ", "))")
            try await stack.ensure(components)
            let validator = PerformanceValidator()
            for client in Client.allCases where only.contains(client) {
                switch client {
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
