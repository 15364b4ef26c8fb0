import ArgumentParser
import Foundation
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: stack start-up (default), the reliability primitives on PostgreSQL, the clients, the OMS.",
        subcommands: [StackBench.self, ReliabilityBench.self, ClientBench.self, OMSBench.self, AuditBench.self],
        defaultSubcommand: StackBench.self
    )
}

struct StackBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stack",
        abstract: "Measure stack start-up: cold boot of all five components, a private stack, and the first consumer-group assignment.",
        discussion: """
        Each run boots a fresh stack in its own directory (installs and build excluded), waits until every \
        component answered a real client round trip, records the time, and tears it down, checking that no \
        process and no listening port is left. Prints every run and the median, p90 and max.
        """
    )

    @OptionGroup var options: CommonOptions
    @Option(name: .long, help: "Runs per measurement.")
    var runs: Int = 5

    func run() async throws {
        guard (1...50).contains(runs) else { throw fail(ProdReadyError(.invalidArgument, "--runs must be between 1 and 50")) }
        do {
            let home = options.resolvedHome
            // Warm the Postgres template once so runs measure copies, as every stack after the first does.
            let warm = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: "bench-warm"), home: home, owned: true)
            try await warm.ensure([.postgres])
            try await warm.teardown(removeData: true)

            var full: [Double] = []
            var privateStack: [Double] = []
            var groupJoin: [Double] = []
            var perComponent: [Component: [Double]] = [:]
            for run in 1...runs {
                full.append(try await measureBoot(Component.allCases, home: home, label: "bench-full", measureGroupJoin: { groupJoin.append($0) }, components: { durations in
                    for (component, duration) in durations { perComponent[component, default: []].append(duration.milliseconds) }
                }))
                privateStack.append(try await measureBoot([.postgres, .kafka, .s3], home: home, label: "bench-private", measureGroupJoin: nil, components: nil))
                progress("run \(run)/\(runs): all five \(format(full.last!)) ms, private postgres+kafka+s3 \(format(privateStack.last!)) ms, first group assignment \(format(groupJoin.last!)) ms")
            }
            print("cold boot, all five components, each answered a round trip: \(summary(full))  (target <= 2000 ms)")
            print("private stack postgres+kafka+s3, each answered a round trip:  \(summary(privateStack))  (target <= 1500 ms)")
            print("first consumer-group assignment + message after boot:         \(summary(groupJoin))")
            for component in Component.allCases.sorted() {
                guard let values = perComponent[component] else { continue }
                let note = component == .kafka ? " (its own S3 server first, then the broker)" : ""
                print("  \(component.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) launch to round trip, in the cold boot: \(summary(values))\(note)")
            }
            print("teardown after every run: 0 processes, 0 listening ports (checked)")
        } catch {
            throw fail(error)
        }
    }

    private func measureBoot(
        _ components: [Component], home: String, label: String, measureGroupJoin: ((Double) -> Void)?, components perComponent: (([Component: Duration]) -> Void)?
    ) async throws -> Double {
        let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: label), home: home, owned: true)
        let clock = ContinuousClock()
        let began = clock.now
        try await stack.ensure(components)
        let elapsed = (clock.now - began).milliseconds
        perComponent?(await stack.startDurations)
        if let measureGroupJoin, let servers = await stack.endpoints.kafkaBootstrapServers {
            measureGroupJoin(try await firstGroupAssignment(bootstrapServers: servers))
        }
        let snapshot = await stack.snapshot
        try await stack.teardown(removeData: true)
        let ports = snapshot.ports.filter(LoopbackPort.isListening)
        let processes = snapshot.processes.filter(\.isAlive)
        guard ports.isEmpty, processes.isEmpty else {
            throw ProdReadyError(.processFailed, "teardown left ports \(ports) and processes \(processes)")
        }
        return elapsed
    }

    private func firstGroupAssignment(bootstrapServers: String) async throws -> Double {
        let configuration = KafkaConfiguration.embedded(bootstrapServers: bootstrapServers, clientID: "bench")
        let producer = try KafkaProducer(configuration: configuration)
        _ = try await producer.send(topic: "bench-group", key: nil, value: Array("x".utf8))
        let consumer = try KafkaConsumer(configuration: configuration, groupID: "bench-group")
        let clock = ContinuousClock()
        let began = clock.now
        try await consumer.subscribe(topics: ["bench-group"])
        while clock.now - began < .seconds(60) {
            if try await consumer.poll(timeout: .milliseconds(100)) != nil {
                let elapsed = (clock.now - began).milliseconds
                try? await consumer.close()
                return elapsed
            }
        }
        throw ProdReadyError(.timeout, "no consumer-group assignment within 60 s")
    }

    private func summary(_ values: [Double]) -> String {
        let sorted = values.sorted()
        func percentile(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int((p * Double(sorted.count - 1)).rounded()))] }
        return "median \(format(percentile(0.5))) ms, p90 \(format(percentile(0.9))) ms, max \(format(sorted.last!)) ms over \(values.count) runs"
    }

    private func format(_ value: Double) -> String { String(Int(value.rounded())) }
}
