import Testing
import Synchronization
import ProdReadyCore
import ProdReadyInfra
import ProdReadyNATS
import TestSupport

@Suite("NATS and JetStream client against a real nats-server", .requires(.nats))
struct NATSClientTests {
    func url() async throws -> String {
        try #require(try await TestInfrastructure.shared.endpoints(for: [.nats]).natsURL)
    }

    func subject(_ stream: JetStreamStreamConfiguration, _ leaf: String) -> String {
        stream.name.lowercased() + "." + leaf
    }

    @Test("a repeated Nats-Msg-Id inside the duplicate window is acknowledged as a duplicate and stored once (sync and async publish)")
    func duplicates() async throws {
        try await withJetStream(try await url()) { nats, stream in
            let first = try await nats.publish(subject: subject(stream, "orders"), payload: Array("a".utf8), messageID: "evt-1")
            let again = try await nats.publish(subject: subject(stream, "orders"), payload: Array("a".utf8), messageID: "evt-1")
            #expect(first.duplicate == false && again.duplicate == true)
            #expect(again.sequence == first.sequence, "the duplicate points at the stored message")

            let batch = (0..<10).map { JetStreamOutgoing(subject: subject(stream, "orders"), payload: Array("b\($0 % 5)".utf8), messageID: "evt-b\($0 % 5)") }
            let acks = try await nats.publishAsync(batch, window: 4).map { try $0.get() }
            #expect(acks.filter(\.duplicate).count == 5)
            #expect(Set(acks.map(\.sequence)).count == 5)

            let consumer = try await nats.pullSubscribe(subject: subject(stream, ">"), consumer: .init(durable: "check"))
            let stored = try await consumer.fetch(batch: 100, timeout: .seconds(1))
            #expect(stored.count == 6, "1 + 5 unique ids stored, got \(stored.count)")
            #expect(stored.compactMap(\.messageID) == ["evt-1", "evt-b0", "evt-b1", "evt-b2", "evt-b3", "evt-b4"])
            for message in stored { try await message.ack() }
        }
    }

    @Test("an unacknowledged message is redelivered after the ack wait; consumer info reports it; in-progress postpones it")
    func redelivery() async throws {
        try await withJetStream(try await url()) { nats, stream in
            try await nats.publish(subject: subject(stream, "jobs"), payload: Array("job-1".utf8))
            let consumer = try await nats.pullSubscribe(subject: subject(stream, ">"), consumer: .init(durable: "workers", ackWait: .seconds(5)))
            let first = try #require(try await consumer.fetch(batch: 1, timeout: .seconds(1)).first)
            #expect(first.metadata?.deliveries == 1)
            #expect(try await consumer.fetch(batch: 1, timeout: .milliseconds(200)).isEmpty, "not redelivered before the ack wait")

            let again = try #require(try await consumer.fetch(batch: 1, timeout: .seconds(12)).first, "redelivered after the ack wait")
            #expect(again.payload == Array("job-1".utf8))
            #expect(again.metadata?.deliveries == 2)
            #expect(again.metadata?.streamSequence == first.metadata?.streamSequence)
            let info = try await nats.consumerInfo(stream: stream.name, consumer: "workers")
            #expect(info.ackPending == 1 && info.redelivered == 1 && info.pending == 0, "\(info)")

            // Still working: in-progress every 500 ms for longer than the 5 s ack wait keeps it from being
            // redelivered (with 4.5 s of slack per step for a loaded machine: a 3 s ack wait was missed when the
            // whole run was held to one core).
            for _ in 0..<14 {
                try await Task.sleep(for: .milliseconds(500))
                try await again.inProgress()
            }
            #expect(try await consumer.fetch(batch: 1, timeout: .milliseconds(200)).isEmpty, "in-progress reset the ack timer")
            try await again.ack()
            #expect(try await nats.consumerInfo(stream: stream.name, consumer: "workers").ackPending == 0)
        }
    }

    @Test("nak with a delay redelivers after the delay; nak'ed past max deliver it stops and a MAX_DELIVERIES advisory reports it; term stops at once")
    func maxDeliver() async throws {
        let url = try await url()
        try await withJetStream(url) { nats, stream in
            let advisories = try await nats.subscribe(subject: JetStreamAdvisory.maxDeliveries(stream: stream.name, consumer: "poison"))
            try await nats.publish(subject: subject(stream, "jobs"), payload: Array("poison".utf8), messageID: "p-1")
            let consumer = try await nats.pullSubscribe(subject: subject(stream, ">"), consumer: .init(durable: "poison", ackWait: .seconds(30), maxDeliver: 3))

            let clock = ContinuousClock()
            var deliveries: [UInt64] = []
            var nakedAt = clock.now
            for _ in 0..<3 {
                let message = try #require(try await consumer.fetch(batch: 1, timeout: .seconds(3)).first, "delivery \(deliveries.count + 1)")
                if !deliveries.isEmpty {
                    #expect(clock.now - nakedAt >= .milliseconds(250), "redelivered \(clock.now - nakedAt) after a nak delayed by 300 ms")
                }
                deliveries.append(message.metadata?.deliveries ?? 0)
                nakedAt = clock.now
                try await message.nak(delay: .milliseconds(300))
            }
            #expect(deliveries == [1, 2, 3])
            #expect(try await consumer.fetch(batch: 1, timeout: .seconds(1)).isEmpty, "no fourth delivery past max deliver 3")
            let advisory = try #require(try await advisories.next(timeout: .seconds(3)), "the server reported the message it gave up on")
            let text = String(decoding: advisory.payload, as: UTF8.self)
            #expect(text.contains("max_deliver") || text.contains("deliveries"), "\(text)")
            #expect(text.contains("\"stream_seq\":1"), "\(text)")

            try await nats.publish(subject: subject(stream, "jobs"), payload: Array("broken".utf8))
            let broken = try #require(try await consumer.fetch(batch: 1, timeout: .seconds(3)).first)
            try await broken.term()
            #expect(try await consumer.fetch(batch: 1, timeout: .milliseconds(500)).isEmpty, "a terminated message is not redelivered")
        }
    }

    @Test("async windowed publish: 5,000 messages, every ack in order of sequence, all read by a pull consumer and acknowledged per batch")
    func publishAsync() async throws {
        try await withJetStream(try await url()) { nats, stream in
            let messages = (0..<5_000).map { JetStreamOutgoing(subject: subject(stream, "bulk"), payload: Array("m\($0)".utf8), messageID: "m\($0)") }
            let acks = try await nats.publishAsync(messages, window: 256).map { try $0.get() }
            #expect(acks.map(\.sequence) == Array(1...5_000), "one sequence per message, in publish order")
            #expect(acks.allSatisfy { $0.stream == stream.name && !$0.duplicate })
            let consumer = try await nats.pullSubscribe(subject: subject(stream, ">"), consumer: .init(durable: "bulk"))
            var read = 0
            while read < 5_000 {
                let batch = try await consumer.fetch(batch: 500, timeout: .seconds(2))
                if batch.isEmpty { break }
                try await nats.acknowledge(batch)
                read += batch.count
            }
            #expect(read == 5_000)
            // Batch acks are confirmed by the time acknowledge returns: nothing left unacknowledged or pending.
            let info = try await nats.consumerInfo(stream: stream.name, consumer: "bulk")
            #expect(info.ackPending == 0 && info.pending == 0 && info.ackFloorStreamSequence == 5_000, "\(info)")
        }
    }

    @Test("core NATS: publish/subscribe, queue groups, request/reply, and a request nobody answers times out")
    func core() async throws {
        let url = try await url()
        let nats = try await NATSConnection(url: url)
        let base = uniqueName("core").replacingAll("-", with: "_")
        let subscription = try await nats.subscribe(subject: base + ".events.*")
        try await nats.publishCore(subject: base + ".events.created", payload: Array("hello".utf8))
        let received = try #require(try await subscription.next(timeout: .seconds(2)))
        #expect(received.subject == base + ".events.created" && received.payload == Array("hello".utf8))

        let service = try await nats.subscribe(subject: base + ".echo", queue: "echoers")
        let responder = Task {
            while let request = try await service.next(timeout: .seconds(5)) {
                try await nats.publishCore(subject: try #require(request.replyTo), payload: Array("echo: ".utf8) + request.payload)
            }
        }
        defer { responder.cancel() }
        let reply = try await nats.request(subject: base + ".echo", payload: Array("ping".utf8))
        #expect(reply.payload == Array("echo: ping".utf8))

        let clock = ContinuousClock()
        let started = clock.now
        let error = await #expect(throws: ProdReadyError.self) { try await nats.request(subject: base + ".nobody", payload: [], timeout: .milliseconds(500)) }
        #expect(error?.code == .timeout && error?.isRetriable == true, "\(String(describing: error))")
        #expect(clock.now - started < .seconds(2))
    }

    @Test("malformed input: bad URLs, subjects, message ids, consumer settings, windows, an oversized message")
    func malformedInput() async throws {
        for bad in ["http://127.0.0.1:4222", "nats://"] {
            let error = await #expect(throws: ProdReadyError.self) { _ = try await NATSConnection(url: bad) }
            #expect(error?.code == .invalidArgument, "\(bad): \(String(describing: error))")
        }
        try await withJetStream(try await url()) { nats, stream in
            let good = subject(stream, "x")
            let cases: [(String, @Sendable () async throws -> Void)] = [
                ("empty subject", { _ = try await nats.publish(subject: "", payload: [1]) }),
                ("subject with a space", { _ = try await nats.publish(subject: "a b", payload: [1]) }),
                ("empty token", { _ = try await nats.publish(subject: "a..b", payload: [1]) }),
                ("wildcard publish", { _ = try await nats.publish(subject: subject(stream, "*"), payload: [1]) }),
                ("wildcard core publish", { try await nats.publishCore(subject: "a.>", payload: [1]) }),
                ("empty message id", { _ = try await nats.publish(subject: good, payload: [1], messageID: "") }),
                ("durable with a dot", { _ = try await nats.pullSubscribe(subject: good, consumer: .init(durable: "a.b")) }),
                ("zero ack wait", { _ = try await nats.pullSubscribe(subject: good, consumer: .init(durable: "d", ackWait: .zero)) }),
                ("max deliver 0", { _ = try await nats.pullSubscribe(subject: good, consumer: .init(durable: "d", maxDeliver: 0)) }),
                ("window 0", { _ = try await nats.publishAsync([JetStreamOutgoing(subject: good, payload: [1])], window: 0) }),
                ("oversized message", { _ = try await nats.publish(subject: good, payload: [UInt8](repeating: 0, count: 2 << 20)) }),
            ]
            for (what, call) in cases {
                let error = await #expect(throws: ProdReadyError.self, "\(what)") { try await call() }
                #expect(error?.code == .invalidArgument, "\(what): \(String(describing: error))")
            }
            let consumer = try await nats.pullSubscribe(subject: subject(stream, ">"), consumer: .init(durable: "empty"))
            #expect(try await consumer.fetch(batch: 10, timeout: .milliseconds(200)).isEmpty, "nothing was stored by the refused calls")
        }
    }

    @Test("a full publish window is backpressure: while the server is paused for 1 s, windowed publishes wait for free slots and every message is acknowledged once resumed", .requiresEmbedded(.nats))
    func windowStall() async throws {
        try await withPrivateStack([.nats], label: "nats-stall") { stack in
            let url = try #require(await stack.endpoints.natsURL)
            let nats = try await NATSConnection(url: url)
            try await nats.createOrUpdateStream(JetStreamStreamConfiguration(name: "STALL", subjects: ["stall.>"]))
            let messages = (0..<500).map { JetStreamOutgoing(subject: "stall.m", payload: Array("m\($0)".utf8), messageID: "s\($0)") }
            try await stack.pause(.nats)
            let publishing = Task { try await nats.publishAsync(messages, window: 8, timeout: .seconds(20)) }
            // The fault's hold time, not a wait for a condition: the 9th publish finds the window full for the
            // whole second (libnats' own default gave up after 200 ms).
            try await Task.sleep(for: .seconds(1))
            try await stack.resume(.nats)
            let outcomes = try await publishing.value
            let failures = outcomes.enumerated().compactMap { index, outcome in
                if case .failure(let error) = outcome { return "s\(index): \(error)" } else { return nil }
            }
            #expect(failures.isEmpty, "\(failures.count) of 500 publishes failed, first: \(failures.prefix(3))")
            let sequences = outcomes.compactMap { try? $0.get().sequence }
            let inPublishOrder = sequences == Array(1...500)
            #expect(inPublishOrder, "one sequence per message, in publish order: got \(sequences.count) acks, first out of place at \(String(describing: zip(sequences, 1...).first { $0.0 != $0.1 }))")
        }
    }

    @Test("a stopped nats-server fails publishes and requests within a bounded time with retriable errors; the same connection recovers", .requiresEmbedded(.nats))
    func outage() async throws {
        try await withPrivateStack([.nats], label: "nats-outage") { stack in
            let url = try #require(await stack.endpoints.natsURL)
            let nats = try await NATSConnection(url: url)
            var stream = JetStreamStreamConfiguration(name: "OUTAGE", subjects: ["outage.>"])
            stream.fileStorage = true
            try await nats.createOrUpdateStream(stream)
            #expect(try await nats.publish(subject: "outage.a", payload: [1]).sequence == 1)

            try await stack.stop(.nats)
            let clock = ContinuousClock()
            let started = clock.now
            let publish = await #expect(throws: ProdReadyError.self) { _ = try await nats.publish(subject: "outage.b", payload: [2], timeout: .seconds(2)) }
            #expect(publish?.isRetriable == true, "\(String(describing: publish))")
            let request = await #expect(throws: ProdReadyError.self) { _ = try await nats.request(subject: "outage.svc", payload: [], timeout: .seconds(1)) }
            #expect(request?.isRetriable == true, "\(String(describing: request))")
            #expect(clock.now - started < .seconds(5), "both failed within \(clock.now - started), limit 5 s")

            try await stack.start(.nats)
            let ack = try await eventually("the same connection to publish again after the restart", timeout: .seconds(15), interval: .milliseconds(200)) {
                do { return .done(try await nats.publish(subject: "outage.c", payload: [3], timeout: .seconds(1))) } catch { return .pending("\(error)") }
            }
            #expect(ack.stream == "OUTAGE")
            #expect(ack.sequence >= 2, "the stream kept its first message across the restart (sequence \(ack.sequence))")
        }
    }
}
