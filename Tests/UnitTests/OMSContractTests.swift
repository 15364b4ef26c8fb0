import Testing
import Foundation
import OMSContract
import ProdReadyCore

@Suite("OMS contract: deterministic ids, content hashes, the wire record")
struct OMSContractTests {
    @Test("UUIDv5 matches RFC 9562 vectors (as Python's uuid5 computes them) and the OMS's domain event ids are stable")
    func uuidV5() {
        let dns: [UInt8] = [0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8]
        #expect(UUIDv5.make(namespace: dns, name: "python.org") == "886313e1-3b8a-5372-9b90-0c9aee199e5d")
        #expect(UUIDv5.make(name: "http://python.org/") == "4c565f0d-3f5a-5890-b41b-20cf47701c5e")
        #expect(UUIDv5.domainEventID(commandID: "cmd-1", eventType: "INSTANCE_CREATED", aggregateID: "shop:Product:p-1") == "4b4cdfc3-2dec-5149-a9e8-63f0ffdaa0c9")
        #expect(UUIDv5.domainEventID(commandID: "cmd-2", eventType: "INSTANCE_CREATED", aggregateID: "shop:Product:p-1") != "4b4cdfc3-2dec-5149-a9e8-63f0ffdaa0c9")
    }

    @Test("the content hash covers type, aggregate and payload, and ignores key order, ids, actor and time")
    func contentHash() throws {
        let base = OMSEvent(eventID: "e1", kind: .command, eventType: "CREATE_INSTANCE", database: "shop", aggregateID: "shop:P:1", aggregateSequence: 1, commandID: "c1", actor: "a", tenant: "t", payload: ["a": 1, "b": ["x", true]])
        var reordered = base
        reordered.payload = try JSONValue.parse(Array(#"{"b":["x",true],"a":1}"#.utf8))
        reordered.actor = "someone else"
        reordered.occurredAt = Date(timeIntervalSince1970: 0)
        #expect(reordered.contentHash == base.contentHash)
        for change in [{ (e: inout OMSEvent) in e.payload = ["a": 2, "b": ["x", true]] }, { $0.eventType = "UPDATE_INSTANCE" }, { $0.aggregateID = "shop:P:2" }] {
            var changed = base
            change(&changed)
            #expect(changed.contentHash != base.contentHash)
        }
        let decoded = try OMSEvent.decode(base.encoded())
        #expect(decoded.eventID == base.eventID && decoded.payload == base.payload && abs(decoded.occurredAt.timeIntervalSince(base.occurredAt)) < 0.001)
        #expect(String(decoding: base.encoded(), as: UTF8.self).contains(#""aggregate_seq":1"#))
        #expect(throws: ProdReadyError.self) { try OMSEvent.decode(Array("{}".utf8)) }
    }
}
