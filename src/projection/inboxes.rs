//! `inboxes` (key = userId): the newest 50 notifications, newest first,
//! with read marks; `unreadCount` counts unread items in the list.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::json_head::JsonHead;
use super::runs::{opt_len, set_owner};
use super::validate::{EventData, Folding};

/// Notifications kept per inbox.
pub(crate) const INBOX_CAP: usize = 50;

/// One notification. `id`, `title`, `body` and `created_at` never change
/// once the item exists (only `read` does): its JSON up to `read` is
/// written once and kept, since an inbox is written whole (up to 50 items)
/// at every change, and escaping every item's text again was a quarter of
/// all document writing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InboxItem {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) body: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) read: bool,
    #[serde(skip)]
    pub(crate) json_head: JsonHead,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxDoc {
    pub(crate) user_id: String,
    pub(crate) owner_id: String,
    pub(crate) unread_count: u64,
    /// Folded notification.created events (all, not only those in the list).
    pub(crate) total_count: u64,
    /// Newest first (a deque: a new notification is a push at the front).
    pub(crate) items: VecDeque<InboxItem>,
    pub(crate) last_stream_seq: i64,
}

impl InboxDoc {
    pub(crate) fn empty(f: &Folding) -> Self {
        InboxDoc {
            user_id: f.entity_id().to_owned(),
            owner_id: String::new(),
            unread_count: 0,
            total_count: 0,
            items: VecDeque::new(),
            last_stream_seq: i64::MIN,
        }
    }

    pub(crate) fn apply(&mut self, f: &Folding) {
        set_owner(&mut self.owner_id, f.owner_id());
        self.last_stream_seq = f.stream_seq;
        match &f.data {
            EventData::NotificationCreated { id, title, body } => {
                self.total_count += 1;
                self.items.truncate(INBOX_CAP - 1);
                self.items.push_front(InboxItem {
                    id: id.clone(),
                    title: title.clone(),
                    body: body.clone(),
                    created_at: f.at,
                    read: false,
                    json_head: JsonHead::default(),
                });
            }
            EventData::NotificationRead { id } => {
                // Unknown ids (never seen, or fallen off the list) are a no-op.
                for item in self.items.iter_mut().filter(|i| &i.id == id) {
                    item.read = true;
                }
            }
            _ => {}
        }
        self.unread_count = self.items.iter().filter(|i| !i.read).count() as u64;
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        96 + self.user_id.len()
            + self.owner_id.len()
            + self
                .items
                .iter()
                // The text twice: as fields and in the JSON head.
                .map(|i| 112 + 2 * (i.id.len() + i.title.len() + opt_len(&i.body)))
                .sum::<usize>()
    }
}
