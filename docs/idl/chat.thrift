// The guide's Kitex chapter (docs/guide/09-from-kitex.md): a thrift service as a Kitex user
// writes it, with a unary method (unary TTHeader) and a bidi one (TTHeader Streaming).
namespace go chat
namespace rs chat

struct Note {
    1: required string text,
}

exception Refused {
    1: required string reason,
}

service Chat {
    Note Shout(1: Note note) throws (1: Refused refused),
    Note Talk(1: Note note) (streaming.mode="bidirectional"),
}
