import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyNATS
import TestSupport

/// The audit flow publishes outbox rows to JetStream at least once and relies on the stream's duplicate
/// window (Nats-Msg-Id = event id) as the first line of exactly-once storage.
@Suite("MSA audit flow: JetStream guarantees", .requires(.nats))
struct JetStreamDeduplicationTests {
    @Test("a republished event id inside the duplicate window is acknowledged as a duplicate and stored once")
    func duplicateWindow() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.nats]).natsURL)
        try await withJetStream(url) { connection, stream in
            let subject = "\(stream.subjects[0].dropLast(2)).audit"
            let first = try await connection.publish(subject: subject, payload: Array(#"{"event_id":"e-1"}"#.utf8), messageID: "e-1")
            let again = try await connection.publish(subject: subject, payload: Array(#"{"event_id":"e-1"}"#.utf8), messageID: "e-1")
            let other = try await connection.publish(subject: subject, payload: Array(#"{"event_id":"e-2"}"#.utf8), messageID: "e-2")
            #expect(first.duplicate == false)
            #expect(again.duplicate == true)
            #expect(again.sequence == first.sequence)
            #expect(other.sequence == first.sequence + 1)

            let subscription = try await connection.pullSubscribe(subject: subject, durable: "audit")
            var payloads: [String] = []
            for message in try await subscription.fetch(batch: 10, timeout: .seconds(1)) {
                payloads.append(String(decoding: message.payload, as: UTF8.self))
                try await message.ack()
            }
            #expect(payloads == [#"{"event_id":"e-1"}"#, #"{"event_id":"e-2"}"#])
        }
    }

    @Test("publishing to an empty or malformed subject is refused with a clear error")
    func malformedSubject() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.nats]).natsURL)
        let connection = try await NATSConnection(url: url)
        let error = await #expect(throws: ProdReadyError.self) { try await connection.publish(subject: "", payload: []) }
        #expect(error?.code == .invalidArgument)
        let spaced = await #expect(throws: ProdReadyError.self) { try await connection.publish(subject: "a b", payload: []) }
        #expect(spaced?.message.contains("no spaces") == true)
    }
}
