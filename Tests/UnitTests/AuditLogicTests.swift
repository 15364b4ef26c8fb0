import AuditContract
import AuditService
import Foundation
import OMSContract
import OMSService
import ProdReadyCore
import ProdReadyReliability
import Testing

@Suite("Audit contract and audit service logic, no servers")
struct AuditLogicTests {
    @Test("the database of a refused request is read from the route's {db} segment, percent-decoded; routes without one, and paths that do not fit the route, have none")
    func databaseOfRefusedRequest() {
        #expect(OMSAuditTrail.database(inRoute: "/api/v1/instances/{db}/async/{class}/create", path: "/api/v1/instances/shop/async/Product/create") == "shop")
        #expect(OMSAuditTrail.database(inRoute: "/api/v1/database/{db}/ontology", path: "/api/v1/database/my%20db/ontology?x=1") == "my db")
        #expect(OMSAuditTrail.database(inRoute: "/api/v1/database/create", path: "/api/v1/database/create") == nil)
        #expect(OMSAuditTrail.database(inRoute: "/api/v1/database/{db}", path: "/api/v1/database/a/b") == nil)
        #expect(OMSAuditTrail.database(inRoute: "/api/v1/database/{db}", path: "/api/v1/database/") == nil)
    }

    func record(type: String = "instance.created", actor: String = "alice", target: String = "db/Product/1") -> AuditRecord {
        AuditRecord(eventType: type, action: "create", actor: AuditActor(id: actor, username: actor, tenantID: "t1"), target: AuditTarget(resourceType: "instance", resourceID: target))
    }

    @Test("subjects, stream names and the seed's stream settings; event types and prefixes are validated")
    func subjects() {
        #expect(AuditSubjects().subject(of: "instance.created") == "audit.instance.created")
        #expect(AuditSubjects().wildcard == "audit.>" && AuditSubjects().streamName == "AUDIT")
        let isolated = AuditSubjects(prefix: "t-1.x_y.")
        #expect(isolated.wildcard == "t-1.x_y.audit.>" && isolated.streamName == "AUDIT_T_1_X_Y")
        let stream = AuditSubjects().stream
        #expect(stream.fileStorage && stream.maxAge == .seconds(2_592_000) && stream.maxBytes == 1 << 30 && stream.maxMessages == 1_000_000 && stream.duplicateWindow == .seconds(120))
        for valid in ["a", "auth.forbidden", "schema.database.created", "temp.x_1-2"] { #expect(AuditSubjects.isValidEventType(valid), "\(valid)") }
        for invalid in ["", "Upper", "a..b", ".a", "a.", "a b", "a.*", "a.>", "é"] { #expect(!AuditSubjects.isValidEventType(invalid), "\(invalid)") }
        for valid in ["", "t1.", "a.b-c_d."] { #expect(AuditSubjects.isValidPrefix(valid), "\(valid)") }
        for invalid in ["t1", ".", "a..", "a b.", "*."] { #expect(!AuditSubjects.isValidPrefix(invalid), "\(invalid)") }
    }

    @Test("a record without an actor, a target or a valid type has problems naming each; a complete one has none")
    func problems() {
        #expect(record().problems.isEmpty)
        let broken = AuditRecord(eventType: "Bad Type", action: "", actor: AuditActor(id: "", username: "", tenantID: nil), target: AuditTarget(resourceType: "", resourceID: ""))
        #expect(broken.problems.count == 6, "\(broken.problems)")
        #expect(broken.problems.contains { $0.contains("actor.id") } && broken.problems.contains { $0.contains("event_type") })
    }

    @Test("decoding: a valid envelope is an event; bytes that are not an envelope, another payload type, or an invalid record are poison with the reason")
    func decoding() throws {
        let envelope: EventEnvelope<AuditRecord> = .audit(id: "e-1", at: Date(), correlationID: "c", causationID: nil, record())
        guard case .event(let decoded) = ReceivedAuditMessage.decode(try envelope.encoded(), subject: "audit.instance.created", stream: "AUDIT", streamSequence: 1).content else {
            Issue.record("a valid envelope was poison")
            return
        }
        #expect(decoded.id == "e-1" && decoded.payload == record())
        guard case .poison(let reason, nil) = ReceivedAuditMessage.decode(Array("not json".utf8), subject: "s", stream: "AUDIT", streamSequence: 2).content else {
            Issue.record("garbage was not poison")
            return
        }
        #expect(reason.hasPrefix("undecodable"))
        let invalid: EventEnvelope<AuditRecord> = .audit(id: "e-2", at: Date(), correlationID: nil, causationID: nil, record(actor: ""))
        guard case .poison(let why, let id) = ReceivedAuditMessage.decode(try invalid.encoded(), subject: "s", stream: "AUDIT", streamSequence: 3).content else {
            Issue.record("an invalid record was stored")
            return
        }
        #expect(id == "e-2" && why.contains("actor.id is empty"))
    }

    @Test("the page cursor round-trips and refuses anything it did not issue")
    func cursor() {
        let cursor = AuditCursor(eventTimeMicros: 1_764_000_000_123_456, id: "0b6f4c3e-7d0a-4a55-9d51-2f3f3f1b2c3d")
        #expect(AuditCursor(token: cursor.token) == cursor)
        #expect(!cursor.token.contains("=") && !cursor.token.contains("/") && !cursor.token.contains("+"))
        for bad in ["", "zzz", Data("12.not-a-uuid".utf8).base64EncodedString(), Data("x.0b6f4c3e-7d0a-4a55-9d51-2f3f3f1b2c3d".utf8).base64EncodedString(), String(repeating: "a", count: 300)] {
            #expect(AuditCursor(token: bad) == nil, "\(bad)")
        }
    }

    @Test("the OMS's audit event id derives from the command: the same command gives the same id, another command another")
    func eventIDs() {
        let first = OMSAuditTrail.eventID(commandID: "c-1", aggregateID: "db:Product:1")
        #expect(first == OMSAuditTrail.eventID(commandID: "c-1", aggregateID: "db:Product:1"))
        #expect(first != OMSAuditTrail.eventID(commandID: "c-2", aggregateID: "db:Product:1"))
        #expect(UUID(uuidString: first) != nil)
    }
}
