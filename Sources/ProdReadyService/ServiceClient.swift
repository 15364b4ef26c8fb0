public import AsyncHTTPClient
import ProdReadyHTTP
import Foundation
import NIOCore
import NIOHTTP1
public import ProdReadyCore

/// What a service answered: status, headers and the JSON body (nil when the body is not JSON).
public struct ServiceResponse: Sendable, CustomStringConvertible {
    public var status: Int
    public var headers: [(String, String)]
    public var body: JSONValue?
    public var text: String

    public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    /// The `data` of a success envelope.
    public var data: JSONValue? { body?["data"] }
    public var description: String { "\(status) \(text.prefix(500))" }
}

/// A JSON client for a service's HTTP API, as any outside client would use it.
public struct ServiceClient: Sendable {
    public let baseURL: String
    public var token: String?

    public init(baseURL: String, token: String? = nil) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
    }

    public func with(token: String?) -> ServiceClient { ServiceClient(baseURL: baseURL, token: token) }

    public func request(_ method: String, _ path: String, json: JSONValue? = nil, rawBody: [UInt8]? = nil, headers: [(String, String)] = [], timeout: Duration = .seconds(10)) async throws -> ServiceResponse {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = HTTPMethod(rawValue: method)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let bytes = rawBody ?? json?.encoded() {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: bytes))
        }
        let response = try await HTTPClients.failingFast.execute(request, timeout: .milliseconds(timeout.wholeMilliseconds))
        let buffer = try await response.body.collect(upTo: 16 << 20)
        let bytes = Array(buffer.readableBytesView)
        return ServiceResponse(
            status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: try? JSONValue.parse(bytes),
            text: String(decoding: bytes, as: UTF8.self))
    }

    public func get(_ path: String) async throws -> ServiceResponse { try await request("GET", path) }
    public func post(_ path: String, _ json: JSONValue, headers: [(String, String)] = []) async throws -> ServiceResponse { try await request("POST", path, json: json, headers: headers) }
    public func put(_ path: String, _ json: JSONValue) async throws -> ServiceResponse { try await request("PUT", path, json: json) }
    public func delete(_ path: String) async throws -> ServiceResponse { try await request("DELETE", path) }
}
