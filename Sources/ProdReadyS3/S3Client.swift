import ProdReadyCore
import AsyncHTTPClient
import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// Credentials and address of an S3-compatible store (path-style addressing, as MinIO and moto expect).
public struct S3Configuration: Sendable {
    /// `http://host:port` or `https://host:port`, without a path.
    public var endpoint: String
    public var accessKey: String
    public var secretKey: String
    public var region: String

    public init(endpoint: String, accessKey: String, secretKey: String, region: String = "us-east-1") throws {
        guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
            throw ProdReadyError(.invalidArgument, "S3 endpoint must start with http:// or https://, got '\(endpoint)'")
        }
        var trimmed = endpoint
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let hostStart = trimmed.firstRange(of: "://")?.upperBound, !trimmed[hostStart...].isEmpty, !trimmed[hostStart...].contains("/") else {
            throw ProdReadyError(.invalidArgument, "S3 endpoint must be scheme://host[:port] with no path, got '\(endpoint)'")
        }
        guard !accessKey.isEmpty, !secretKey.isEmpty else {
            throw ProdReadyError(.invalidArgument, "S3 access key and secret key must not be empty")
        }
        self.endpoint = trimmed
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.region = region
    }

    var hostHeader: String {
        String(endpoint[endpoint.firstRange(of: "://")!.upperBound...])
    }
}

/// A minimal S3 client: SigV4-signed requests over AsyncHTTPClient's shared client.
public struct S3Client: Sendable {
    public let configuration: S3Configuration
    private let signer: SigV4Signer
    private let timeout: Duration

    public init(configuration: S3Configuration, timeout: Duration = .seconds(10)) {
        self.configuration = configuration
        self.signer = SigV4Signer(accessKey: configuration.accessKey, secretKey: configuration.secretKey, region: configuration.region)
        self.timeout = timeout
    }

    public func createBucket(_ bucket: String) async throws {
        let response = try await send("PUT", bucket: bucket, key: nil)
        // 409 BucketAlreadyOwnedByYou is success for an idempotent create.
        if response.status == 409, response.body.contains("BucketAlreadyOwnedByYou") { return }
        try response.expectSuccess("create bucket '\(bucket)'")
    }

    public func deleteBucket(_ bucket: String) async throws {
        let response = try await send("DELETE", bucket: bucket, key: nil)
        if response.status == 404 { return }
        try response.expectSuccess("delete bucket '\(bucket)'")
    }

    /// Stores an object. With `ifNoneMatch` the write only succeeds if the key does not exist yet
    /// (`.preconditionFailed` otherwise).
    public func putObject(bucket: String, key: String, body: [UInt8], ifNoneMatch: Bool = false) async throws {
        let response = try await send("PUT", bucket: bucket, key: key, headers: ifNoneMatch ? [("If-None-Match", "*")] : [], body: body)
        try response.expectSuccess("put '\(bucket)/\(key)'")
    }

    /// The object's bytes; `.notFound` if there is none.
    public func getObject(bucket: String, key: String) async throws -> [UInt8] {
        let response = try await send("GET", bucket: bucket, key: key)
        try response.expectSuccess("get '\(bucket)/\(key)'")
        return response.bytes
    }

    public func deleteObject(bucket: String, key: String) async throws {
        let response = try await send("DELETE", bucket: bucket, key: key)
        try response.expectSuccess("delete '\(bucket)/\(key)'")
    }

    /// Keys under `prefix` (first 1,000; paging arrives with the full client).
    public func listKeys(bucket: String, prefix: String = "") async throws -> [String] {
        let response = try await send("GET", bucket: bucket, key: nil, query: [("list-type", "2"), ("prefix", prefix)])
        try response.expectSuccess("list '\(bucket)'")
        return response.body.xmlValues(of: "Key")
    }

    struct Response {
        var status: UInt
        var bytes: [UInt8]
        var body: String { String(decoding: bytes, as: UTF8.self) }

        func expectSuccess(_ what: String) throws {
            guard !(200..<300).contains(status) else { return }
            let code = body.xmlValues(of: "Code").first ?? "HTTP \(status)"
            switch status {
            case 404: throw ProdReadyError(.notFound, "S3 \(what): \(code)")
            case 412: throw ProdReadyError(.preconditionFailed, "S3 \(what): \(code)")
            case 401, 403: throw ProdReadyError(.accessDenied, "S3 \(what): \(code)")
            case 500...: throw ProdReadyError(.serverError, "S3 \(what): \(code)", retriable: true)
            default: throw ProdReadyError(.serverError, "S3 \(what): \(code)")
            }
        }
    }

    private func send(_ method: String, bucket: String, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [], body: [UInt8] = []) async throws -> Response {
        guard Self.isValidBucketName(bucket) else {
            throw ProdReadyError(.invalidArgument, "invalid S3 bucket name '\(bucket)': 3-63 characters of a-z, 0-9, '.' and '-'")
        }
        if let key, key.isEmpty || key.utf8.count > 1024 {
            throw ProdReadyError(.invalidArgument, "S3 object key must be 1 to 1024 bytes")
        }
        var path = "/" + bucket
        if let key { path += "/" + SigV4Signer.uriEncode(key, keepSlash: true) }
        let payloadHash = SigV4Signer.hexSHA256(body)
        let signedHeaders = headers + [("host", configuration.hostHeader)]
        let authHeaders = signer.signatureHeaders(
            method: method, path: path, query: query, headers: signedHeaders, payloadHash: payloadHash, date: Int(time(nil))
        )
        let queryString = query.map { "\(SigV4Signer.uriEncode($0.0))=\(SigV4Signer.uriEncode($0.1))" }.joined(separator: "&")
        var request = HTTPClientRequest(url: configuration.endpoint + path + (queryString.isEmpty ? "" : "?" + queryString))
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers + authHeaders { request.headers.add(name: name, value: value) }
        if !body.isEmpty || method == "PUT" {
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(timeout.wholeMilliseconds))
            let buffer = try await response.body.collect(upTo: 64 * 1024 * 1024)
            return Response(status: response.status.code, bytes: Array(buffer.readableBytesView))
        } catch let error as ProdReadyError {
            throw error
        } catch {
            throw ProdReadyError(.connectionFailed, "S3 \(method) \(path) at \(configuration.endpoint) failed", retriable: true, underlying: error)
        }
    }

    static func isValidBucketName(_ name: String) -> Bool {
        (3...63).contains(name.count) && name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
        }
    }
}

extension String {
    /// Text of every `<tag>…</tag>` element, in order (enough for S3's flat XML answers).
    func xmlValues(of tag: String) -> [String] {
        var values: [String] = []
        var rest = self[...]
        while let open = rest.firstRange(of: "<\(tag)>"), let close = rest[open.upperBound...].firstRange(of: "</\(tag)>") {
            values.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return values
    }
}
