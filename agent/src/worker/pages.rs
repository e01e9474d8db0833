//! Reassembly of assignment sets and changes sent in pages: pages of one message arrive in
//! order, page 0 first; it is whole once its last page arrived. A page out of order, or of
//! another message, drops what was gathered: the leader then finds the worker not holding the
//! set it sent and sends it again in full.

use crate::dispatch::messages::{AssignmentDelta, AssignmentSet};

/// The pages of one set gathered so far.
#[derive(Debug, Default)]
pub(crate) struct Pages {
    gathering: Option<AssignmentSet>,
}

impl Pages {
    /// Takes one page; returns the whole set once `page` completes it.
    pub(crate) fn take(&mut self, page: AssignmentSet) -> Option<AssignmentSet> {
        if page.page == 0 {
            self.gathering = None;
            if page.pages <= 1 {
                return Some(page);
            }
            self.gathering = Some(AssignmentSet { page: 1, ..page });
            return None;
        }
        let mut set = self.gathering.take()?;
        let next = set.term == page.term
            && set.version == page.version
            && set.pages == page.pages
            && set.page == page.page;
        if !next {
            tracing::debug!(
                version = page.version,
                page = page.page,
                "assignment page out of order; dropped with the pages before it"
            );
            return None;
        }
        set.tasks.extend(page.tasks);
        set.page += 1;
        if set.page == set.pages {
            return Some(AssignmentSet { page: 0, ..set });
        }
        self.gathering = Some(set);
        None
    }
}

/// The pages of one change gathered so far.
#[derive(Debug, Default)]
pub(crate) struct DeltaPages {
    gathering: Option<AssignmentDelta>,
}

/// What a page of changes did.
#[derive(Debug, PartialEq)]
pub(crate) enum DeltaPage {
    /// Taken; more pages are to come.
    Taken,
    /// The last page: the changes are whole.
    Whole(AssignmentDelta),
    /// Out of order or of another change: dropped, with what was gathered.
    Dropped,
}

impl DeltaPages {
    /// Takes one page of changes.
    pub(crate) fn take(&mut self, page: AssignmentDelta) -> DeltaPage {
        if page.page == 0 {
            self.gathering = None;
            if page.pages <= 1 {
                return DeltaPage::Whole(page);
            }
            self.gathering = Some(AssignmentDelta { page: 1, ..page });
            return DeltaPage::Taken;
        }
        let Some(mut delta) = self.gathering.take() else {
            return DeltaPage::Dropped;
        };
        let next = delta.term == page.term
            && delta.base == page.base
            && delta.version == page.version
            && delta.pages == page.pages
            && delta.page == page.page;
        if !next {
            return DeltaPage::Dropped;
        }
        delta.upserts.extend(page.upserts);
        delta.removed.extend(page.removed);
        delta.page += 1;
        if delta.page == delta.pages {
            return DeltaPage::Whole(AssignmentDelta { page: 0, ..delta });
        }
        self.gathering = Some(delta);
        DeltaPage::Taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::messages::Assignment;

    fn assignment() -> Assignment {
        use shoal_scheduler::*;
        Assignment {
            task: Task {
                id: TaskId(1),
                service: ServiceId(1),
                slot: Some(1),
                node: Some(NodeId::new("n")),
                spec_version: 1,
                desired: DesiredState::Running,
                status: status_at(TaskState::Assigned, Timestamp(1)),
                created_at: Timestamp(0),
                not_before: Timestamp(0),
            },
            service_name: "web".into(),
            spec: None,
        }
    }

    fn page(version: u64, page: u32, pages: u32, tasks: usize) -> AssignmentSet {
        let one = assignment();
        AssignmentSet {
            term: 1,
            version,
            leader_term: 1,
            page,
            pages,
            tasks: vec![one; tasks],
        }
    }

    #[test]
    fn pages_in_order_make_the_whole_set() {
        let mut pages = Pages::default();
        assert!(pages.take(page(1, 0, 3, 2)).is_none());
        assert!(pages.take(page(1, 1, 3, 2)).is_none());
        let whole = pages.take(page(1, 2, 3, 1)).expect("complete");
        assert_eq!(whole.tasks.len(), 5);
        assert_eq!((whole.page, whole.pages, whole.version), (0, 3, 1));
        let single = pages.take(page(2, 0, 1, 4)).expect("one page is whole");
        assert_eq!(single.tasks.len(), 4);
    }

    fn delta(page: u32, pages: u32, upserts: usize) -> AssignmentDelta {
        AssignmentDelta {
            term: 1,
            leader_term: 1,
            base: 4,
            version: 5,
            page,
            pages,
            upserts: vec![assignment(); upserts],
            removed: vec![shoal_scheduler::TaskId(u64::from(page))],
        }
    }

    #[test]
    fn changes_in_pages_apply_once_whole() {
        let mut pages = DeltaPages::default();
        assert_eq!(pages.take(delta(0, 2, 3)), DeltaPage::Taken);
        match pages.take(delta(1, 2, 2)) {
            DeltaPage::Whole(whole) => {
                assert_eq!((whole.upserts.len(), whole.removed.len()), (5, 2));
            }
            other => panic!("expected the whole change, got {other:?}"),
        }
        assert_eq!(
            pages.take(delta(1, 2, 1)),
            DeltaPage::Dropped,
            "nothing begun"
        );
        assert!(matches!(pages.take(delta(0, 1, 1)), DeltaPage::Whole(_)));
    }

    #[test]
    fn a_page_out_of_order_drops_the_set() {
        let mut pages = Pages::default();
        assert!(pages.take(page(1, 0, 3, 1)).is_none());
        assert!(pages.take(page(1, 2, 3, 1)).is_none(), "page 1 is missing");
        assert!(
            pages.take(page(1, 1, 3, 1)).is_none(),
            "nothing left to add to"
        );
        assert!(pages.take(page(2, 0, 2, 1)).is_none());
        assert!(pages.take(page(3, 1, 2, 1)).is_none(), "another set's page");
    }
}
