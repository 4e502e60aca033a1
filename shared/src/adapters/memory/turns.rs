//! [`SendTurns`] in memory.

use async_trait::async_trait;

use super::MemoryStore;
use crate::ports::store::{LaneView, SendTurns, StoreError, Turn};

#[async_trait]
impl SendTurns for MemoryStore {
    async fn take_turn(&self, scope_id: &str, lane: &str, now_ms: i64, hold_ms: i64) -> Result<Turn, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let lane = state.turns.entry((scope_id.to_owned(), lane.to_owned())).or_default();
        if let Some((_, until_ms)) = lane.holder.as_ref().filter(|(_, until_ms)| *until_ms > now_ms) {
            return Ok(Turn::Busy { until_ms: *until_ms });
        }
        let token = hex::encode(crate::random::random_bytes::<8>());
        lane.holder = Some((token.clone(), now_ms + hold_ms));
        Ok(Turn::Yours { token, sent_mark: lane.sent_mark, unconfirmed: lane.unconfirmed })
    }

    async fn peek_turn(&self, scope_id: &str, lane: &str, now_ms: i64) -> Result<LaneView, StoreError> {
        self.ops.read();
        let state = self.state();
        let Some(lane) = state.turns.get(&(scope_id.to_owned(), lane.to_owned())) else {
            return Ok(LaneView::default());
        };
        let held_until_ms = lane.holder.as_ref().map(|(_, until_ms)| *until_ms).filter(|until_ms| *until_ms > now_ms);
        Ok(LaneView { held_until_ms, sent_mark: lane.sent_mark, unconfirmed: lane.unconfirmed })
    }

    async fn end_turn(
        &self,
        scope_id: &str,
        lane: &str,
        token: &str,
        sent_mark: Option<i64>,
    ) -> Result<(), StoreError> {
        self.ops.write();
        let mut state = self.state();
        let Some(lane) = state.turns.get_mut(&(scope_id.to_owned(), lane.to_owned())) else {
            return Ok(());
        };
        if lane.holder.as_ref().is_some_and(|(holder, _)| holder == token) {
            lane.holder = None;
        }
        if sent_mark >= lane.sent_mark && sent_mark.is_some() {
            lane.sent_mark = sent_mark;
            lane.unconfirmed = false;
        }
        Ok(())
    }

    async fn raise_mark(&self, scope_id: &str, lane: &str, mark: i64) -> Result<(), StoreError> {
        self.ops.write();
        if let Some(lane) = self.state().turns.get_mut(&(scope_id.to_owned(), lane.to_owned()))
            && Some(mark) > lane.sent_mark
        {
            lane.sent_mark = Some(mark);
            lane.unconfirmed = true;
        }
        Ok(())
    }
}
