import ArgumentParser
import Foundation
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPerformance
import ProdReadyS3

struct ClientBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clients",
        abstract: "Measure the messaging and storage clients against a private embedded stack (issue #4's figures).",
        discussion: """
        Boots a private embedded stack with the components measured, runs each measurement, prints one line per \
        measurement with percentiles and throughput, tears the stack down, and exits 1 if a target is missed. \
        S3: PUT of small objects with several in flight (no target: the Python S3 server is the ceiling).
        """
    )

    enum Client: String, CaseIterable, ExpressibleByArgument {
        case s3
    }

    @OptionGroup var options: CommonOptions
    @Option(name: .long, parsing: .upToNextOption, help: "Clients to measure (default: all): \(Client.allCases.map(\.rawValue).joined(separator: ", ")).")
    var only: [Client] = Client.allCases
    @Option(name: .long, help: "S3 objects to PUT.")
    var s3Objects: Int = 5_000
    @Option(name: .long, help: "S3 object size in bytes.")
    var s3ObjectSize: Int = 1_024
    @Option(name: .long, help: "S3 PUTs in flight.")
    var s3InFlight: Int = 16

    func validate() throws {
        for (name, value, range) in [
            ("--s3-objects", s3Objects, 1...1_000_000), ("--s3-object-size", s3ObjectSize, 0...(16 << 20)), ("--s3-in-flight", s3InFlight, 1...256),
        ] where !range.contains(value) {
            throw ValidationError("\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
    }

    func run() async throws {
        let home = options.resolvedHome
        let components: [Component] = Set(only).map { switch $0 { case .s3: .s3 } }
        let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: "bench-clients"), home: home, owned: true)
        let failed: [String]
        do {
            progress("booting a private stack: \(components.map(\.rawValue).sorted().joined(separator: ", "))")
            try await stack.ensure(components)
            let validator = PerformanceValidator()
            for client in Client.allCases where only.contains(client) {
                switch client {
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
