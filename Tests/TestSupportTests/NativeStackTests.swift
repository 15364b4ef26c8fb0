import Testing
import Foundation
import Synchronization
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Every component of the embedded stack, in a private stack of its own: real round trip, data written,
/// stopped (unreachable with a clear, retriable error), started on the same port with the data intact,
/// SIGKILLed and started again with the data intact.
@Suite("Embedded stack components", .requiresEmbedded(.postgres, .kafka, .nats, .redis, .s3))
struct NativeStackTests {
    @Test("stop → unreachable → start → same port, data intact; SIGKILL → start → data intact", arguments: Component.allCases)
    func stopStartKill(component: Component) async throws {
        try await withPrivateStack([component], label: "lifecycle-\(component)") { stack in
            let endpoints = await stack.endpoints
            let port = try #require(await stack.snapshot.component(component)?.port)
            _ = try await HealthProbe.roundTrip(component, endpoints: endpoints)
            var marker = DataMarker(component: component)
            try await marker.write(endpoints)
            let check = marker
            let missingRightAfterWriting = try await check.missing(endpoints)
            try #require(missingRightAfterWriting == nil, "data missing right after writing: \(missingRightAfterWriting ?? "")")

            try await stack.stop(component)
            let stopped = await #expect(throws: ProdReadyError.self, "a stopped \(component) must refuse clients") {
                try await withDeadline(.seconds(15)) {
                    try await HealthProbe.roundTrip(component, endpoints: endpoints, timeout: .seconds(2))
                }
            }
            #expect(stopped?.isRetriable == true, "the error for a stopped \(component) should say retrying can help: \(String(describing: stopped))")
            #expect([.connectionFailed, .timeout, .serverError].contains(stopped?.code), "unexpected error for stopped \(component): \(String(describing: stopped))")
            #expect(!LoopbackPort.isListening(port), "port \(port) still bound after stopping \(component)")

            try await stack.start(component)
            #expect(await stack.snapshot.component(component)?.port == port)
            #expect(await stack.endpoints == endpoints)
            try await eventually("\(component) data after a graceful restart", timeout: .seconds(10)) {
                try await check.missing(endpoints).map(PollOutcome<Bool>.pending) ?? .done(true)
            }

            try await stack.kill(component)
            #expect(!LoopbackPort.isListening(port), "port \(port) still bound after SIGKILL of \(component)")
            try await stack.start(component)
            try await eventually("\(component) data after SIGKILL and restart", timeout: .seconds(10)) {
                try await check.missing(endpoints).map(PollOutcome<Bool>.pending) ?? .done(true)
            }
        }
    }

    @Test("a caller asking for a component another caller is still booting gets it only once it answers, and so does what depends on it")
    func concurrentStartsJoinTheBoot() async throws {
        // The shared test stack is asked for the same components by many tests at once; a test admitted while
        // S3 was still booting used to find it "running", hit a closed port, and start the broker on top of it.
        try await withPrivateStack([], label: "joined-boot") { stack in
            let first = Task { try await stack.ensure([.s3]) }
            try await eventually("the S3 process to be spawned", timeout: .seconds(30), interval: .milliseconds(1)) {
                await stack.snapshot.component(.s3)?.process != nil ? .done(()) : .pending("not spawned yet")
            }
            let port = try #require(await stack.snapshot.component(.s3)?.port)
            let answeredBeforeAsking = LoopbackPort.isAccepting(port)
            try await stack.ensure([.s3])
            #expect(LoopbackPort.isAccepting(port), "ensure returned while S3 did not accept connections yet")
            _ = try await HealthProbe.roundTrip(.s3, endpoints: await stack.endpoints, timeout: .seconds(2))
            try await stack.ensure([.kafka])
            _ = try await HealthProbe.roundTrip(.kafka, endpoints: await stack.endpoints, timeout: .seconds(5))
            try await first.value
            // SeaweedFS takes most of a second before its S3 gateway listens; asking after that would test nothing.
            #expect(!answeredBeforeAsking, "S3 already answered when the second caller asked; the race was not exercised")
        }
    }

    @Test("the broker keeps its log in an S3 server of its own: with the stack's S3 stopped it takes and serves messages, and its restart keeps them")
    func brokerStorageIsItsOwn() async throws {
        try await withPrivateStack([.s3, .kafka], label: "broker-storage") { stack in
            let before = await stack.snapshot
            let storage = try #require(before.component(.kafka)?.brokerStorage)
            let storageProcess = try #require(storage.process)
            #expect(storage.port != before.component(.s3)?.port, "the broker's storage is the stack's S3 server")
            #expect(before.processes.contains(storageProcess), "the watchdog and teardown do not know the broker's storage")

            try await stack.stop(.s3)
            let servers = try #require(await stack.endpoints.kafkaBootstrapServers)
            var configuration = KafkaConfiguration.embedded(bootstrapServers: servers)
            configuration.deliveryTimeout = .seconds(20)
            let topic = "outlives-s3"
            try await KafkaAdmin(configuration: configuration).createTopic(topic, partitions: 1, timeout: .seconds(20))
            let sent = (0..<20).map { "m\($0)" }
            let outcomes = try await KafkaProducer(configuration: configuration).send(batch: sent.map { KafkaOutgoing(topic: topic, key: nil, value: Array($0.utf8)) })
            let failures = outcomes.compactMap { if case .failure(let error) = $0 { error } else { nil } }
            #expect(failures.isEmpty, "with the stack's S3 stopped, \(failures.count) of \(sent.count) sends failed, first: \(String(describing: failures.first))")

            try await stack.restart(.kafka)
            #expect(storageProcess.isAlive, "restarting the broker restarted its storage too")
            let reader = try KafkaConsumer(configuration: configuration, groupID: "verify")
            try await reader.assign([KafkaTopicPartition(topic, 0): .beginning])
            let read = Mutex<[String]>([])
            try await eventually("the \(sent.count) messages back after the broker's restart", timeout: .seconds(30)) {
                let batch = try await reader.poll(upTo: sent.count, timeout: .milliseconds(200)).map(\.text)
                let all = read.withLock { $0 += batch; return $0 }
                return all.count >= sent.count ? .done(()) : .pending("read \(all)")
            }
            #expect(read.withLock { $0 } == sent)
        }
    }

    @Test("pause → requests time out, resume → they succeed again")
    func pauseResume() async throws {
        try await withPrivateStack([.redis], label: "pause") { stack in
            let endpoints = await stack.endpoints
            try await stack.pause(.redis)
            let paused = await #expect(throws: ProdReadyError.self) {
                try await withDeadline(.seconds(10)) {
                    try await HealthProbe.roundTrip(.redis, endpoints: endpoints, timeout: .milliseconds(500))
                }
            }
            #expect(paused?.isRetriable == true)
            #expect(await stack.health(.redis).detail.contains("paused"))
            try await stack.resume(.redis)
            _ = try await HealthProbe.roundTrip(.redis, endpoints: endpoints)
        }
    }

    @Test("starting a component whose port another process holds fails with port_in_use")
    func portInUse() async throws {
        try await withPrivateStack([.redis], label: "port") { stack in
            let port = try #require(await stack.snapshot.component(.redis)?.port)
            try await stack.stop(.redis)
            // Something else takes the port while the component is down.
            let squatter = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(squatter) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            var yes: Int32 = 1
            setsockopt(squatter, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(squatter, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            try #require(bound == 0 && listen(squatter, 1) == 0)
            let error = await #expect(throws: ProdReadyError.self) { try await stack.start(.redis) }
            #expect(error?.code == .portInUse)
            #expect(error?.message.contains(String(port)) == true)
        }
    }
}

@Suite("Embedded S3 server (SeaweedFS)", .requiresEmbedded(.s3))
struct SeaweedPortTests {
    @Test("three private S3 servers side by side listen only on ports their stacks chose, and no two share one; torn down, they leave no socket in /tmp")
    func privateStacksNeverCollide() async throws {
        var sockets: [String] = []
        try await withPrivateStack([.s3], label: "ports-a") { a in
            try await withPrivateStack([.s3], label: "ports-b") { b in
                try await withPrivateStack([.s3], label: "ports-c") { c in
                    var seen: [Int: String] = [:]
                    for (label, stack) in [("a", a), ("b", b), ("c", c)] {
                        let snapshot = await stack.snapshot
                        let recorded = Set(snapshot.ports)
                        #expect(recorded.count == 10, "stack \(label) records \(recorded.sorted()): 5 HTTP ports and their gRPC companions")
                        let pid = try #require(snapshot.component(.s3)?.process?.pid)
                        // The inner servers bind over the second after the S3 gateway answers: wait for all of them, and
                        // fail at once on any port the stack did not choose.
                        let listening = try await eventually("stack \(label)'s SeaweedFS to listen on all \(recorded.count) recorded ports", timeout: .seconds(20)) {
                            let now = LoopbackPort.listeningPorts(ofProcess: pid)
                            let unexpected = now.subtracting(recorded)
                            if !unexpected.isEmpty { throw ProdReadyError(.protocolError, "stack \(label): SeaweedFS listens on \(unexpected.sorted()), ports its stack did not choose") }
                            return now == recorded ? .done(now) : .pending("listening on \(now.sorted()) of \(recorded.sorted()) (S3 \(snapshot.component(.s3)?.port ?? 0), \(String(describing: snapshot.component(.s3)?.seaweed)))")
                        }
                        for port in listening {
                            #expect(seen[port] == nil, "port \(port) is used by stacks \(seen[port] ?? "") and \(label)")
                            seen[port] = label
                        }
                        _ = try await HealthProbe.roundTrip(.s3, endpoints: await stack.endpoints)
                        let s3 = try #require(snapshot.component(.s3))
                        sockets += try #require(s3.seaweed).socketPaths(s3Port: s3.port)
                    }
                    let bound = sockets.filter { FileManager.default.fileExists(atPath: $0) }
                    #expect(bound.count >= 15, "SeaweedFS's sockets are where the stack expects them: \(bound.count) of \(sockets.count) found")
                }
            }
        }
        let left = sockets.filter { FileManager.default.fileExists(atPath: $0) }
        #expect(left.isEmpty, "sockets left in /tmp after teardown: \(left)")
    }
}
