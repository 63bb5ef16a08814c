"""A tiny, hand-built set of extracts whose every metric value is worked out by hand in the tests.

Four LSOAs (two per place, one most and one least deprived in each), a handful of spells, contacts
and screening records, and one of each kind of defect. See test_metrics_handbuilt.py for the sums.
"""

from __future__ import annotations

from pathlib import Path

GEOGRAPHY = """lsoa_code,lsoa_name,place_code,place,neighbourhood,imd_rank,imd_decile,imd_quintile
E01000001,Dudley 001A,E08000027,Dudley,North,100,1,1
E01000002,Dudley 002A,E08000027,Dudley,South,30000,10,5
E01000003,Walsall 001A,E08000030,Walsall,Central,200,1,1
E01000004,Walsall 002A,E08000030,Walsall,East,29000,9,5
"""

POPULATION = """year,lsoa_code,age,sex,population
2024,E01000001,30,F,100
2024,E01000001,70,M,50
2024,E01000002,30,F,200
2024,E01000002,80,F,150
2024,E01000003,40,M,300
2024,E01000004,66,F,400
"""

_SPELL_HEADER = ("spell_id,person_id,provider_code,admission_date,admission_method,patient_classification,"
                 "discharge_date,discharge_method,discharge_destination,discharge_ready_date,age,sex,ethnicity,"
                 "lsoa_code,gp_practice_code,submission_id")
SPELLS_APRIL = _SPELL_HEADER + """
s1,P01,RNA,2024-04-01,21,1,2024-04-05,1,19,2024-04-05,70,M,A,E01000001,M87001,1
s2,P02,RNA,2024-04-02,21,1,2024-04-08,1,19,2024-04-06,80,F,A,E01000001,M87001,1
s3,P03,RNA,2024-04-03,11,1,2024-04-04,1,19,2024-04-04,30,F,H,E01000002,M87002,1
s4,P04,RNA,2024-04-03,11,2,2024-04-03,1,19,2024-04-03,50,M,A,E01000002,M87002,1
s5,P05,RNA,2024-04-03,21,1,2024-04-09,4,79,2024-04-08,60,F,A,E01000002,M87002,1
s6,P06,RNA,2024-04-04,21,1,2024-04-06,1,19,2024-04-06,17,F,A,E01000001,M87001,1
s7,P07,RNA,2024-04-04,21,1,2024-04-07,1,19,,40,M,Z,E01000002,M87002,1
w1,P11,RBK,2024-04-10,21,1,2024-04-13,1,19,2024-04-12,45,M,M,E01000003,M91001,1
w2,P12,RBK,2024-04-11,21,1,2024-04-15,1,19,2024-04-15,70,F,,E01000004,M91002,1
bad1,P21,RNA,2024-04-10,21,1,2024-04-08,1,19,,50,F,A,E01000001,M87001,1
bad2,P22,RNA,2024-04-10,21,1,2024-04-12,1,19,2024-04-12,50,F,A,E01099999,M87001,1
bad3,P23,RNA,2024-04-10,21,1,2031-01-01,1,19,,50,F,A,E01000001,M87001,1
bad4,P24,RNA,2024-04-10,21,1,2024-04-12,1,19,2024-04-12,abc,F,A,E01000001,M87001,1
"""
# s2 resubmitted with a corrected discharge date: the later submission replaces the first.
SPELLS_MAY = _SPELL_HEADER + """
s2,P02,RNA,2024-04-02,21,1,2024-04-10,1,19,2024-04-06,80,F,A,E01000001,M87001,2
s8,P08,RNA,2024-05-01,21,1,2024-05-09,1,54,2024-05-03,66,F,A,E01000001,M87001,2
s9,P09,RNA,2024-05-02,21,1,2024-05-04,1,19,2024-05-04,90,M,C,E01000002,M87002,2
w3,P13,RBK,2024-05-11,21,1,2024-05-15,1,19,2024-05-15,72,F,A,E01000004,M91002,2
"""
SPELLS_JUNE = _SPELL_HEADER + """
s10,P10,RNA,2024-06-01,21,1,2024-06-03,1,19,2024-06-02,50,F,A,E01000002,M87002,3
"""

_CONTACT_HEADER = ("contact_id,person_id,service_request_id,contact_date,attendance_status,duration_minutes,"
                   "consultation_medium,team_type,age,sex,ethnicity,lsoa_code,gp_practice_code,submission_id")
CONTACTS_APRIL = _CONTACT_HEADER + """
c1,P1,R1,2024-04-03,5,30,01,A01,70,M,A,E01000001,M87001,1
c2,P1,R1,2024-04-20,5,30,01,A01,70,M,A,E01000001,M87001,1
c3,P2,R2,2024-04-05,3,,01,A03,30,F,H,E01000002,M87002,1
c7,P4,R4,2024-04-09,3,,01,A01,40,M,A,E01000003,M91001,1
"""
# c7 resubmitted: the person did attend after all.
CONTACTS_MAY = _CONTACT_HEADER + """
c4,P3,R3,2024-05-06,6,20,02,A01,80,F,A,E01000002,M87002,2
c5,P1,R1,2024-05-07,5,30,01,A01,70,M,A,E01000001,M87001,2
c7,P4,R4,2024-04-09,5,45,01,A01,40,M,A,E01000003,M91001,2
"""
CONTACTS_JUNE = _CONTACT_HEADER + """
c6,P2,R2,2024-06-01,5,15,04,A03,30,F,H,E01000002,M87002,3
c8,P5,R5,2024-06-10,2,,01,A10,66,F,A,E01000004,M91002,3
"""

SCREENING = """snapshot_date,person_id,age,sex,ethnicity,lsoa_code,gp_practice_code,ceased,last_adequate_screen_date
2024-03-31,B1,55,F,A,E01000001,M87001,false,2022-01-01
2024-03-31,B2,60,F,A,E01000001,M87001,false,2020-01-01
2024-03-31,B3,65,F,H,E01000002,M87002,false,
2024-03-31,B4,70,F,A,E01000002,M87002,false,2023-06-01
2024-03-31,B5,52,F,A,E01000002,M87002,false,2023-06-01
2024-03-31,B6,58,F,A,E01000002,M87002,true,2023-06-01
2024-03-31,B7,54,F,A,E01000003,M91001,false,2021-04-01
2024-03-31,B8,56,F,A,E01000003,M91001,false,2021-03-31
2024-03-31,B9,69,F,A,E01000004,M91002,false,2024-03-31
"""

FILES = {
    "geography/geography.csv": GEOGRAPHY,
    "population/population_2024.csv": POPULATION,
    "inpatient_spells/spells_2024-04.csv": SPELLS_APRIL,
    "inpatient_spells/spells_2024-05.csv": SPELLS_MAY,
    "inpatient_spells/spells_2024-06.csv": SPELLS_JUNE,
    "community_contacts/contacts_2024-04.csv": CONTACTS_APRIL,
    "community_contacts/contacts_2024-05.csv": CONTACTS_MAY,
    "community_contacts/contacts_2024-06.csv": CONTACTS_JUNE,
    "breast_screening/screening_2024-03-31.csv": SCREENING,
}


def write_handbuilt(root: Path) -> Path:
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"), encoding="utf-8")
    return root
