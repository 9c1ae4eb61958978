//! The demo CRM: seeded users in two teams, threads with comments, and who may see what
//! (application code, not part of the integration). The rules live here so the server's SSE
//! `authorize`, its server functions and the UI all agree.

use serde::{Deserialize, Serialize};

use sse_notify_core::{sse_event, Topic, TopicBuilder};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Sees every thread of every team.
    Admin,
    /// Sees only their own team's threads.
    Rep,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub role: Role,
    pub team: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    pub id: u64,
    pub title: String,
    pub team: String,
    /// Who gets "someone replied in your thread" notifications.
    pub owner: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub thread: u64,
    pub author: u64,
    pub text: String,
}

/// Longest comment, in characters, after trimming.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// Validates and normalises a comment's text.
pub fn normalize_comment(text: &str) -> Result<String, String> {
    let t = text.trim();
    match t.chars().count() {
        0 => Err("comment must not be empty".to_owned()),
        n if n > MAX_COMMENT_CHARS => Err(format!("comment is {n} characters; at most {MAX_COMMENT_CHARS}")),
        _ => Ok(t.to_owned()),
    }
}

fn user(id: u64, name: &str, role: Role, team: &str) -> User {
    User { id, name: name.to_owned(), role, team: team.to_owned() }
}

/// The seeded users: an admin and two reps at Acme, one rep at Globex.
pub fn users() -> Vec<User> {
    vec![
        user(1, "alice", Role::Admin, "acme"),
        user(2, "bob", Role::Rep, "acme"),
        user(3, "carol", Role::Rep, "acme"),
        user(4, "dave", Role::Rep, "globex"),
    ]
}

pub fn find_user(id: u64) -> Option<User> {
    users().into_iter().find(|u| u.id == id)
}

/// The seeded threads.
pub fn threads() -> Vec<Thread> {
    let thread =
        |id, title: &str, team: &str, owner| Thread { id, title: title.to_owned(), team: team.to_owned(), owner };
    vec![
        thread(1, "Acme renewal", "acme", 2),
        thread(2, "Acme upsell", "acme", 3),
        thread(3, "Globex pilot", "globex", 4),
    ]
}

pub fn find_thread(id: u64) -> Option<Thread> {
    threads().into_iter().find(|t| t.id == id)
}

pub fn can_view_thread(user: &User, thread: &Thread) -> bool {
    user.role == Role::Admin || user.team == thread.team
}

/// May edit or delete a comment: its author, or an admin.
pub fn can_change_comment(user: &User, comment: &Comment) -> bool {
    user.role == Role::Admin || user.id == comment.author
}

/// `comment_thread:{id}`
pub fn thread_topic(id: u64) -> Topic {
    TopicBuilder::custom("comment_thread", id).expect("numeric id makes a valid topic")
}

/// The SSE authorization rule for the demo: who may subscribe to `topic`.
///
/// Deny by default: the task board's topics (`tasks`, `task:{id}`) are public, the CRM's need a
/// signed-in user with access, and any topic this app does not know is refused.
pub fn may_subscribe(user: Option<&User>, topic: &Topic) -> bool {
    let (kind, id) = match topic.as_str().split_once(':') {
        Some((kind, id)) => (kind, id),
        None => (topic.as_str(), ""),
    };
    match (kind, user) {
        ("tasks", _) => id.is_empty(),
        ("task", _) => is_id(id),
        ("comment_thread", Some(user)) => {
            id.parse().ok().and_then(find_thread).is_some_and(|t| can_view_thread(user, &t))
        }
        ("workspace", Some(user)) => user.role == Role::Admin || user.team == id,
        ("user", Some(user)) => user.id.to_string() == id,
        _ => false,
    }
}

/// Which topics show who is on them (presence): the board, each task, each CRM thread. Who
/// may see it is [`may_subscribe`]'s say, as for the topic's events.
pub fn has_presence(topic: &Topic) -> bool {
    let kind = topic.as_str().split_once(':').map_or(topic.as_str(), |(kind, _)| kind);
    matches!(kind, "tasks" | "task" | "comment_thread")
}

/// A decimal id as the app makes them (no sign, no leading zeros, fits `u64`).
fn is_id(s: &str) -> bool {
    s.parse::<u64>().is_ok_and(|n| n.to_string() == s)
}

sse_event! {
    /// Changes to a thread's comments; published on `comment_thread:{thread}` and
    /// `workspace:{team}`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum CommentEvent {
        Created { id: u64, thread: u64 } = "comment:created",
        Updated { id: u64, thread: u64 } = "comment:updated",
        Deleted { id: u64, thread: u64 } = "comment:deleted",
    }
    topics(&self) {
        let (CommentEvent::Created { thread, .. }
        | CommentEvent::Updated { thread, .. }
        | CommentEvent::Deleted { thread, .. }) = self;
        let mut topics = vec![thread_topic(*thread)];
        // The app's own team names are slugs; one that is not a topic is left out rather
        // than publishing on a topic nobody can follow.
        if let Some(t) = find_thread(*thread).and_then(|t| TopicBuilder::workspace_slug(&t.team).ok()) {
            topics.push(t);
        }
        topics
    }
}

sse_event! {
    /// A per-user notification, published on `user:{id}`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ReplyNotification = "notification:reply" {
        /// Who is notified.
        pub user: u64,
        pub thread: u64,
        pub comment: u64,
        /// The name of who replied.
        pub by: String,
    }
    topics(&self) { vec![TopicBuilder::user(self.user)] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sse_notify_core::SseEvent;

    fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    #[test]
    fn roles_and_teams_decide_what_a_user_sees() {
        let [alice, bob, _carol, dave] = <[User; 4]>::try_from(users()).unwrap();
        let [renewal, _upsell, pilot] = <[Thread; 3]>::try_from(threads()).unwrap();
        assert!(can_view_thread(&alice, &pilot), "admin sees everything");
        assert!(can_view_thread(&bob, &renewal));
        assert!(!can_view_thread(&bob, &pilot), "a rep sees only their team's threads");
        assert!(!can_view_thread(&dave, &renewal));
        assert!(may_subscribe(Some(&bob), &t("comment_thread:1")));
        assert!(!may_subscribe(Some(&dave), &t("comment_thread:1")));
        assert!(!may_subscribe(Some(&bob), &t("comment_thread:99")), "unknown thread");
        assert!(may_subscribe(Some(&bob), &t("workspace:acme")));
        assert!(!may_subscribe(Some(&bob), &t("workspace:globex")));
        assert!(may_subscribe(Some(&alice), &t("workspace:globex")));
        assert!(may_subscribe(Some(&bob), &t("user:2")));
        assert!(!may_subscribe(Some(&bob), &t("user:3")), "nobody hears another user's notifications");
        assert!(!may_subscribe(None, &t("comment_thread:1")), "signed out");
        assert!(may_subscribe(None, &t("tasks")), "the board is public");
        assert!(may_subscribe(None, &t("task:5")));
        for unknown in ["otherapp:comment_thread:1", "betatasks", "tasks:x", "task:x", "task:05", "admin", "user"] {
            assert!(!may_subscribe(Some(&alice), &t(unknown)), "unknown topic {unknown} is refused");
        }
    }

    #[test]
    fn comment_events_round_trip_on_thread_and_workspace_topics() {
        let e = CommentEvent::Updated { id: 9, thread: 3 };
        let topics: Vec<String> = e.topics().iter().map(|t| t.to_string()).collect();
        assert_eq!(topics, ["comment_thread:3", "workspace:globex"]);
        assert_eq!(CommentEvent::decode(e.name(), &e.payload().to_string()).unwrap(), e);
        let n = ReplyNotification { user: 2, thread: 1, comment: 5, by: "carol".into() };
        assert_eq!(n.topics(), vec![t("user:2")]);
        assert_eq!(ReplyNotification::decode(n.name(), &n.payload().to_string()).unwrap(), n);
    }
}
